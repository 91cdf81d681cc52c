-- :Handoff delegate: the selection (or the cursor line) and an instruction -> `handoff.delegate`.

local client = require('handoff.client')

local M = {}

--- The LSP range of the command's line range (or a characterwise visual selection).
---@param opts table  User command opts
---@param bufnr integer
---@param encoding string
function M.range(opts, bufnr, encoding)
  local line1, line2 = opts.line1, opts.line2
  if opts.range == 0 then
    line1 = vim.api.nvim_win_get_cursor(0)[1]
    line2 = line1
  end
  local lines = vim.api.nvim_buf_get_lines(bufnr, line1 - 1, line2, false)
  local first, last = lines[1] or '', lines[#lines] or ''
  local start_col, end_col = 0, #last
  if opts.range > 0 and vim.fn.visualmode() == 'v' then
    local s = vim.api.nvim_buf_get_mark(bufnr, '<')
    local e = vim.api.nvim_buf_get_mark(bufnr, '>')
    if s[1] == line1 and e[1] == line2 then
      start_col = math.min(s[2], #first)
      if #last > 0 then
        local ec = math.min(e[2], #last - 1)
        end_col = ec + 1 + vim.str_utf_end(last, ec + 1)
      end
    end
  end
  return {
    start = { line = line1 - 1, character = vim.str_utfindex(first, encoding, start_col, false) },
    ['end'] = { line = line2 - 1, character = vim.str_utfindex(last, encoding, end_col, false) },
  }
end

--- The diagnostics of other sources in `range`, LSP-shaped, for the agent's brief.
---@param bufnr integer
---@param range table  LSP range
local function diagnostics_in(bufnr, range)
  local result = {}
  for _, d in ipairs(vim.diagnostic.get(bufnr)) do
    if d.source ~= 'handoff' and d.lnum >= range.start.line and d.lnum <= range['end'].line then
      local lsp = vim.tbl_get(d, 'user_data', 'lsp')
      result[#result + 1] = lsp
        or {
          range = {
            start = { line = d.lnum, character = d.col },
            ['end'] = { line = d.end_lnum or d.lnum, character = d.end_col or d.col },
          },
          severity = d.severity,
          source = d.source,
          code = d.code,
          message = d.message,
        }
    end
  end
  return result
end

--- The client-side command `handoff.client.delegatePrompt` that the server's code action names on
--- a selection with no TODO or comment: ask for the instruction, then `handoff.delegate`.
---@param command lsp.Command
---@param ctx { client_id: integer, bufnr: integer }
function M.prompt(command, ctx)
  local lsp_client = vim.lsp.get_client_by_id(ctx.client_id)
  local args = (command.arguments or {})[1]
  if not lsp_client or type(args) ~= 'table' then
    return
  end
  vim.ui.input({ prompt = 'Handoff instruction: ' }, function(input)
    if input == nil or vim.trim(input) == '' then
      return -- cancelled: nothing delegated
    end
    local params = vim.tbl_extend('force', args, { instruction = vim.trim(input) })
    client.exec(lsp_client, 'handoff.delegate', params, function(result)
      local id = type(result) == 'table' and result.sessionId or '?'
      client.notify(('delegated (session %s)'):format(id))
    end, ctx.bufnr)
  end)
end

--- `:[range]Handoff delegate [instruction]`.
function M.run(args, opts)
  local bufnr = vim.api.nvim_get_current_buf()
  local lsp_client = client.get(bufnr)
  if not lsp_client then
    return
  end
  local uri = vim.uri_from_bufnr(bufnr)
  local range = M.range(opts, bufnr, lsp_client.offset_encoding or 'utf-16')
  local function send(instruction)
    local params = { uri = uri, range = range }
    local diagnostics = diagnostics_in(bufnr, range)
    if #diagnostics > 0 then
      params.diagnostics = diagnostics
    end
    if instruction and vim.trim(instruction) ~= '' then
      params.instruction = instruction
    end
    client.exec(lsp_client, 'handoff.delegate', params, function(result)
      local id = type(result) == 'table' and result.sessionId or '?'
      client.notify(('delegated (session %s)'):format(id))
    end, bufnr)
  end
  if #args > 0 then
    return send(table.concat(args, ' '))
  end
  vim.ui.input({ prompt = 'Handoff instruction (empty: use the TODO/comments): ' }, function(input)
    if input ~= nil then -- nil = cancelled
      send(input)
    end
  end)
end

return M
