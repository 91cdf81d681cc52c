-- Plugin checks that need Neovim but no server: statusline text, completion, ranges, health.
-- Writes { ok, results = { [name] = value }, errors } as JSON to $HANDOFF_TEST_OUT.

local results, errors = {}, {}

local function check(name, fn)
  local ok, value = xpcall(fn, debug.traceback)
  if ok then
    results[name] = value == nil and vim.NIL or value
  else
    errors[#errors + 1] = name .. ': ' .. tostring(value)
  end
end

local status = require('handoff.status')
local function session(id, state, created)
  return {
    id = id,
    title = 'task ' .. id,
    state = state,
    createdAt = created or '2025-01-01T00:00:00Z',
    filesChanged = {},
    costUsd = 0.25,
  }
end

check('idle', function()
  return require('handoff').status()
end)

check('counts', function()
  local events = 0
  vim.api.nvim_create_autocmd('User', {
    pattern = 'HandoffSessions',
    callback = function()
      events = events + 1
    end,
  })
  status.set(1001, {
    session('a', 'running'),
    session('b', 'running'),
    session('c', 'ready', '2025-01-02T00:00:00Z'),
    session('d', 'applied'),
    session('e', 'discarded'),
  })
  status.set(1002, { session('f', 'queued'), session('g', 'failed') })
  return { text = require('handoff').status(), events = events }
end)

check('statusline', function()
  vim.o.statusline = "%{v:lua.require'handoff'.status()}"
  return vim.api.nvim_eval_statusline(vim.o.statusline, {}).str
end)

check('newest_first', function()
  return vim.tbl_map(function(s)
    return s.id
  end, require('handoff').sessions())
end)

check('format', function()
  local s = session('z', 'ready', os.date('!%Y-%m-%dT%H:%M:%SZ', os.time() - 125))
  s.filesChanged = { 'file:///a', 'file:///b' }
  return require('handoff.commands').format_session(s)
end)

check('setup_prefix', function()
  require('handoff').setup({ status_prefix = 'H: ' })
  local text = require('handoff').status()
  require('handoff').setup({ status_prefix = 'Handoff: ' })
  return text
end)

check('complete_sub', function()
  return vim.fn.getcompletion('Handoff ', 'cmdline')
end)

check('complete_prefix', function()
  return vim.fn.getcompletion("'<,'>Handoff de", 'cmdline')
end)

check('complete_id', function()
  return vim.fn.getcompletion('Handoff apply ', 'cmdline')
end)

check('ranges', function()
  vim.api.nvim_buf_set_lines(0, 0, -1, false, { 'héllo wörld', 'second line', '' })
  local range = require('handoff.delegate').range
  local out = {}
  -- cursor line (no range)
  vim.api.nvim_win_set_cursor(0, { 2, 3 })
  out.cursor = range({ range = 0, line1 = 2, line2 = 2 }, 0, 'utf-16')
  -- linewise 1..2
  vim.cmd('normal! ggVj\27')
  out.linewise = range({ range = 2, line1 = 1, line2 = 2 }, 0, 'utf-16')
  -- characterwise "wörld" on line 1 (bytes 7..12, UTF-16 columns 6..11)
  vim.api.nvim_win_set_cursor(0, { 1, 7 })
  vim.cmd('normal! v$h\27')
  out.charwise16 = range({ range = 2, line1 = 1, line2 = 1 }, 0, 'utf-16')
  out.charwise8 = range({ range = 2, line1 = 1, line2 = 1 }, 0, 'utf-8')
  -- an empty last line
  out.empty = range({ range = 2, line1 = 3, line2 = 3 }, 0, 'utf-16')
  return out
end)

check('unknown_subcommand', function()
  local seen
  local notify = vim.notify
  vim.notify = function(msg, level)
    seen = { msg = msg, level = level }
  end
  vim.cmd('Handoff frobnicate')
  vim.notify = notify
  return seen
end)

check('no_client', function()
  local seen
  local notify = vim.notify
  vim.notify = function(msg, level)
    seen = { msg = msg, level = level }
  end
  vim.cmd('Handoff delegate do it')
  vim.notify = notify
  return seen
end)

check('health', function()
  vim.cmd('checkhealth handoff')
  return vim.api.nvim_buf_get_lines(0, 0, -1, false)
end)

local fd = assert(io.open(assert(vim.env.HANDOFF_TEST_OUT), 'w'))
fd:write(vim.json.encode({ ok = #errors == 0, results = results, errors = errors }))
fd:close()
vim.cmd('qa!')
