-- Delegate a selection, watch the statusline go running -> ready, review the diff, apply,
-- list the sessions, check health. Run inside headless Neovim by tests/editors/nvim/test_nvim.py.
--
-- Environment (besides the harness's): HANDOFF_TEST_FILE (the file to open),
-- HANDOFF_TEST_EXPECTED (a file holding the text the buffer must have after :Handoff apply).

local here = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':h')
local H = dofile(here .. '/harness.lua')
local out, step, wait_for, statusline = H.out, H.step, H.wait_for, H.statusline

local function scenario()
  local expected = H.read_file(assert(vim.env.HANDOFF_TEST_EXPECTED))
  local bufnr = H.open(assert(vim.env.HANDOFF_TEST_FILE))
  out.filetype = vim.bo[bufnr].filetype
  out.status_before = H.record_status()

  -- Select the body of add() linewise and delegate; vim.ui.input answers the instruction.
  local prompts = {}
  vim.ui.input = function(opts, on_confirm)
    prompts[#prompts + 1] = opts.prompt
    on_confirm('add a comment')
  end
  -- Another tool's diagnostic in the selection travels with the task.
  local ns = vim.api.nvim_create_namespace('nvim-test-linter')
  vim.diagnostic.set(ns, bufnr, {
    { lnum = 1, col = 4, message = 'consider a comment here', severity = 2, source = 'testlint' },
  })
  vim.cmd('normal! ggVj\27')
  vim.cmd("'<,'>Handoff delegate")
  out.input_prompts = prompts
  step('delegated')

  wait_for('a session in the statusline', function()
    return statusline():find('running') or statusline():find('queued') or statusline():find('ready')
  end)
  wait_for('the statusline to say ready', function()
    return statusline():find('ready') ~= nil
  end)
  out.status_ready = statusline()
  step('ready')

  -- :Handoff diff shows the proposed result next to the file, in diff mode.
  vim.cmd('Handoff diff')
  local proposed
  wait_for('the proposed-result buffer of :Handoff diff', function()
    for _, buf in ipairs(vim.api.nvim_list_bufs()) do
      if vim.api.nvim_buf_get_name(buf):match('^handoff://') then
        proposed = buf
        return true
      end
    end
    return false
  end)
  local diff_windows = 0
  for _, win in ipairs(vim.api.nvim_tabpage_list_wins(0)) do
    if vim.wo[win].diff then
      diff_windows = diff_windows + 1
    end
  end
  out.diff = {
    name = vim.api.nvim_buf_get_name(proposed),
    text = H.buffer_text(proposed),
    modifiable = vim.bo[proposed].modifiable,
    diff_windows = diff_windows,
    tabs = #vim.api.nvim_list_tabpages(),
  }
  vim.cmd('diffoff!')
  vim.cmd('tabonly')
  vim.api.nvim_set_current_buf(bufnr)
  step('diff')

  out.buffer_before_apply = H.buffer_text(bufnr)
  vim.cmd('Handoff apply')
  local ok = pcall(wait_for, 'the buffer to hold the expected text', function()
    return H.buffer_text(bufnr) == expected
  end)
  out.buffer_after_apply = H.buffer_text(bufnr)
  if not ok then
    error('the buffer never reached the expected text', 0)
  end
  step('applied')
  wait_for('the session to leave the ready state', function()
    return statusline():find('ready') == nil
  end)
  out.status_after_apply = statusline()

  -- :Handoff sessions lists the session (the first vim.ui.select call is the session list).
  local selects = {}
  vim.ui.select = function(items, opts, on_choice)
    local formatted = {}
    for i, item in ipairs(items) do
      formatted[i] = opts.format_item and opts.format_item(item) or tostring(item)
    end
    selects[#selects + 1] = {
      prompt = opts.prompt,
      items = formatted,
      ids = vim.tbl_map(function(item)
        return type(item) == 'table' and item.id or nil
      end, items),
      states = vim.tbl_map(function(item)
        return type(item) == 'table' and item.state or nil
      end, items),
    }
    on_choice(nil) -- dismiss
  end
  vim.cmd('Handoff sessions')
  wait_for('the session picker', function()
    return #selects > 0
  end)
  out.sessions_select = selects[1]
  step('sessions')

  -- :checkhealth handoff opens its report in a buffer.
  vim.cmd('checkhealth handoff')
  out.health = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  step('checkhealth')

  out.diagnostics = vim.tbl_map(function(d)
    return { message = d.message, severity = d.severity, source = d.source, lnum = d.lnum }
  end, vim.diagnostic.get(bufnr))
end

H.run(scenario)
