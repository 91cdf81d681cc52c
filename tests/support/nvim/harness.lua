-- Shared by the end-to-end scenarios that tests/editors/nvim/test_nvim.py runs inside headless Neovim.
--
-- Environment: HANDOFF_TEST_OUT (where the JSON result goes), HANDOFF_TEST_TIMEOUT_MS (each wait).
-- Every wait is on a condition; nothing sleeps for a guess. A scenario that fails records its
-- error; the result is always written and Neovim always quits.

local H = {}

H.TIMEOUT = tonumber(vim.env.HANDOFF_TEST_TIMEOUT_MS) or 60000
H.out = {
  steps = {}, -- names of the steps that completed, in order
  statuses = {}, -- distinct consecutive statusline texts seen
  notifications = {},
  progress = {},
  errors = {},
}
local out = H.out

function H.step(name)
  out.steps[#out.steps + 1] = name
end

function H.read_file(path)
  local fd = assert(io.open(path, 'r'))
  local text = fd:read('*a')
  fd:close()
  return text
end

-- Observe everything the user would see ------------------------------------------------------

local real_notify = vim.notify
vim.notify = function(msg, level, opts)
  out.notifications[#out.notifications + 1] = { msg = msg, level = level }
  if type(msg) == 'string' and msg:find('Client handoff quit') then
    out.server_quit = msg
  end
  return real_notify(msg, level, opts)
end

vim.o.laststatus = 2
vim.o.statusline = "%{v:lua.require'handoff'.status()}"

function H.statusline()
  return vim.api.nvim_eval_statusline(vim.o.statusline, {}).str
end

function H.record_status()
  local text = H.statusline()
  if out.statuses[#out.statuses] ~= text then
    out.statuses[#out.statuses + 1] = text
  end
  return text
end

vim.api.nvim_create_autocmd('User', {
  pattern = 'HandoffSessions',
  callback = function()
    H.record_status()
    out.session_events = (out.session_events or 0) + 1
  end,
})

vim.api.nvim_create_autocmd('LspProgress', {
  callback = function(args)
    local value = vim.tbl_get(args, 'data', 'params', 'value') or {}
    local entry = { kind = value.kind, title = value.title, message = value.message }
    out.progress[#out.progress + 1] = entry
  end,
})

function H.wait_for(what, condition)
  local ok = vim.wait(H.TIMEOUT, function()
    H.record_status()
    return out.server_quit ~= nil or condition()
  end, 50)
  if out.server_quit then
    error(('the server quit while waiting for %s: %s'):format(what, out.server_quit), 0)
  end
  if not ok then
    error(('timed out after %d ms waiting for %s'):format(H.TIMEOUT, what), 0)
  end
end

function H.buffer_text(bufnr)
  return table.concat(vim.api.nvim_buf_get_lines(bufnr, 0, -1, false), '\n') .. '\n'
end

--- Open `file` and wait until the handoff client is attached and initialized.
function H.open(file)
  vim.cmd.edit(vim.fn.fnameescape(file))
  local bufnr = vim.api.nvim_get_current_buf()
  H.wait_for('the handoff client to attach and initialize', function()
    local client = vim.lsp.get_clients({ bufnr = bufnr, name = 'handoff' })[1]
    return client ~= nil and client.initialized == true
  end)
  local client = vim.lsp.get_clients({ bufnr = bufnr, name = 'handoff' })[1]
  local caps = client.server_capabilities
  out.server_commands = vim.tbl_get(caps, 'executeCommandProvider', 'commands')
  H.step('attached')
  return bufnr, client
end

--- The session with `id` as last reported, or nil.
function H.session(id)
  for _, s in ipairs(require('handoff').sessions()) do
    if s.id == id then
      return s
    end
  end
end

--- The id in the "delegated (session ID)" notification that follows index `after`.
function H.delegated_id(after)
  for i = after + 1, #out.notifications do
    local id = tostring(out.notifications[i].msg):match('delegated %(session ([^)]+)%)')
    if id then
      return id
    end
  end
end

--- Run `scenario`, write the JSON result and quit.
function H.run(scenario)
  local ok, err = xpcall(scenario, debug.traceback)
  if not ok then
    out.errors[#out.errors + 1] = tostring(err)
    local okl, line = pcall(H.statusline)
    out.status_at_error = okl and line or nil
    out.sessions_at_error = require('handoff').sessions()
  end
  out.ok = ok
  local okm, messages = pcall(vim.api.nvim_exec2, 'messages', { output = true })
  out.messages = okm and messages.output or nil
  out.lsp_log_path = vim.lsp.get_log_path()
  local fd = assert(io.open(assert(vim.env.HANDOFF_TEST_OUT), 'w'))
  fd:write(vim.json.encode(out))
  fd:close()
  vim.cmd('qa!')
end

return H
