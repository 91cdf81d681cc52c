-- The handoff-lsp client and `workspace/executeCommand`, shared by the commands.

local M = {}

function M.notify(msg, level)
  vim.notify('Handoff: ' .. msg, level or vim.log.levels.INFO)
end

--- The handoff client of `bufnr`, else any running handoff client.
---@param bufnr? integer
---@return vim.lsp.Client?
function M.get(bufnr)
  local clients = vim.lsp.get_clients({ name = 'handoff', bufnr = bufnr or 0 })
  if #clients == 0 then
    clients = vim.lsp.get_clients({ name = 'handoff' })
  end
  if #clients == 0 then
    M.notify(
      'no handoff-lsp client is running; enable it with vim.lsp.enable("handoff")'
        .. ' (see :checkhealth handoff)',
      vim.log.levels.ERROR
    )
    return nil
  end
  return clients[1]
end

--- Send `command` with one object argument; call `on_result(result)` on success.
---@param client vim.lsp.Client
---@param command string
---@param args table
---@param on_result? fun(result: any)
---@param bufnr? integer
function M.exec(client, command, args, on_result, bufnr)
  local params = { command = command, arguments = { args } }
  local ok = client:request('workspace/executeCommand', params, function(err, result)
    if err then
      local msg = err.message or vim.inspect(err)
      M.notify(('%s failed: %s'):format(command, msg), vim.log.levels.ERROR)
      return
    end
    if on_result then
      on_result(result)
    end
  end, bufnr)
  if not ok then
    M.notify('the handoff client has stopped; see :Handoff log', vim.log.levels.ERROR)
  end
end

return M
