-- :Handoff diff: the proposed result of a session next to each file as it is now, in Neovim's
-- diff mode. The proposed contents come from `handoff.preview {sessionId}`
-- (`{files = {{uri, content|nil, action}}}`); one tab per changed file.

local M = {}

--- Open the diff of one file in a new tab: left the file (editable), right the proposal.
---@param session table
---@param file { uri: string, content: string?, action: string?, conflicts: integer? }
local function open_file(session, file)
  local path = vim.uri_to_fname(file.uri)
  vim.cmd.tabnew(vim.fn.fnameescape(path))
  local current_win = vim.api.nvim_get_current_win()
  local filetype = vim.bo.filetype

  local name = ('handoff://%s/%s'):format(session.id, vim.fn.fnamemodify(path, ':.'))
  local existing = vim.fn.bufnr(name)
  if existing ~= -1 then
    vim.api.nvim_buf_delete(existing, { force = true })
  end
  local buf = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_name(buf, name)
  local text = file.content
  if text == vim.NIL then
    text = nil
  end
  local lines = text and vim.split(text, '\n', { plain = true }) or {}
  if text and text:sub(-1) == '\n' then
    lines[#lines] = nil -- the final newline ends the last line
  end
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].buftype = 'nofile'
  vim.bo[buf].bufhidden = 'wipe'
  vim.bo[buf].swapfile = false
  vim.bo[buf].modifiable = false
  vim.bo[buf].filetype = filetype
  vim.b[buf].handoff_session = session.id

  vim.cmd('vertical rightbelow sbuffer ' .. buf)
  local what = file.action == 'delete' and 'deletes this file'
    or file.action == 'conflict' and ('%d conflict(s)'):format(tonumber(file.conflicts) or 0)
    or 'proposed'
  local title = session.title or session.id
  vim.wo.winbar = ('Handoff %s: %s  (:Handoff apply %s)'):format(what, title, session.id)
  vim.cmd.diffthis()
  vim.api.nvim_set_current_win(current_win)
  vim.cmd.diffthis()
end

--- Show the proposed result of `session` (`client` answers `handoff.preview`).
---@param client vim.lsp.Client
---@param session table
---@param on_error fun(message: string)
function M.open(client, session, on_error)
  client:request('workspace/executeCommand', {
    command = 'handoff.preview',
    arguments = { { sessionId = session.id } },
  }, function(err, result)
    if err then
      return on_error(err.message or vim.inspect(err))
    end
    local files = type(result) == 'table' and result.files or {}
    if #files == 0 then
      return vim.notify(('Handoff: "%s" changes no file'):format(session.title or session.id))
    end
    for _, file in ipairs(files) do
      open_file(session, file)
    end
  end)
end

return M
