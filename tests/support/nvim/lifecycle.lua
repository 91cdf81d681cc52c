-- The rest of a session's life through :Handoff: cancel and discard a slow session; delegate a
-- TODO typed in an unsaved buffer (empty instruction); follow up; apply and show the transcript
-- from the :Handoff sessions menu; open the log. Run inside headless Neovim by tests/editors/nvim/test_nvim.py.
--
-- Environment (besides the harness's): HANDOFF_TEST_FILE, HANDOFF_TEST_EXPECTED (the buffer text
-- after the apply), HANDOFF_SERVER_LOG (the --log-file given to the server).

local here = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':h')
local H = dofile(here .. '/harness.lua')
local out, step, wait_for, statusline = H.out, H.step, H.wait_for, H.statusline

local function state_of(id)
  local s = H.session(id)
  return s and s.state or 'absent'
end

local function scenario()
  local expected = H.read_file(assert(vim.env.HANDOFF_TEST_EXPECTED))
  local bufnr = H.open(assert(vim.env.HANDOFF_TEST_FILE))

  local inputs, answers = {}, {}
  vim.ui.input = function(opts, on_confirm)
    inputs[#inputs + 1] = opts.prompt
    on_confirm(table.remove(answers, 1) or '')
  end

  -- 1. A slow session, delegated with the instruction on the command line: cancel, then discard.
  local mark = #out.notifications
  vim.cmd('Handoff delegate slow: take your time')
  wait_for('the slow session to start', function()
    return H.delegated_id(mark) ~= nil and statusline():find('running') ~= nil
  end)
  local slow = H.delegated_id(mark)
  out.slow = { id = slow, inputs_asked = #inputs }
  vim.cmd('Handoff cancel')
  wait_for('the slow session to be cancelled', function()
    return state_of(slow) == 'cancelled'
  end)
  out.slow.status_cancelled = statusline()
  vim.cmd('Handoff discard ' .. slow:sub(1, 8)) -- a unique prefix is enough
  wait_for('the slow session to be discarded', function()
    local state = state_of(slow)
    return state == 'discarded' or state == 'absent'
  end)
  out.slow.final = state_of(slow)
  step('cancelled+discarded')

  -- 2. A TODO typed but not saved; the cursor on it; an empty instruction = the TODO is the task.
  vim.api.nvim_buf_set_lines(bufnr, 0, 0, false, { '# TODO(agent): add a comment' })
  vim.api.nvim_win_set_cursor(0, { 1, 0 })
  answers[1] = ''
  mark = #out.notifications
  vim.cmd('Handoff delegate')
  wait_for('the TODO session to be ready', function()
    local id = H.delegated_id(mark)
    return id ~= nil and state_of(id) == 'ready'
  end)
  local todo = H.delegated_id(mark)
  out.todo = { id = todo, title = H.session(todo).title, inputs_asked = #inputs }
  step('todo ready')

  -- 3. Follow up in the same worktree.
  local seen_running = false
  vim.cmd('Handoff followup ' .. todo .. ' comment sub too')
  wait_for('the follow-up to finish', function()
    seen_running = seen_running or state_of(todo) == 'running' or state_of(todo) == 'queued'
    return seen_running and state_of(todo) == 'ready'
  end)
  step('followed up')

  -- 4. :Handoff sessions -> the session -> "Apply".
  local menus = {}
  local choose = { todo, 'Apply' }
  vim.ui.select = function(items, opts, on_choice)
    local labels = vim.tbl_map(function(item)
      return opts.format_item and opts.format_item(item) or tostring(item)
    end, items)
    menus[#menus + 1] = { prompt = opts.prompt, labels = labels }
    local want = table.remove(choose, 1)
    for _, item in ipairs(items) do
      if item.id == want or item.label == want then
        return on_choice(item)
      end
    end
    on_choice(nil)
  end
  vim.cmd('Handoff sessions')
  local ok = pcall(wait_for, 'the buffer to hold the expected text', function()
    return H.buffer_text(bufnr) == expected
  end)
  out.menus = menus
  out.buffer_after_apply = H.buffer_text(bufnr)
  if not ok then
    error('the buffer never reached the expected text', 0)
  end
  wait_for('the session to be applied', function()
    return state_of(todo) == 'applied'
  end)
  step('applied from the menu')

  -- 5. :Handoff sessions -> the session -> "Show transcript": the server opens its report.
  choose = { todo, 'Show transcript' }
  vim.cmd('Handoff sessions')
  wait_for('the session report to open', function()
    return vim.api.nvim_buf_get_name(0):match('session%.diff$') ~= nil
  end)
  out.report = vim.api.nvim_buf_get_lines(0, 0, 3, false)
  out.action_menus = vim.tbl_map(function(m)
    return m.labels
  end, menus)
  step('report')

  -- 6. :Handoff log opens the server's log file.
  vim.cmd('Handoff log')
  out.log_buffer = vim.api.nvim_buf_get_name(0)
  step('log')
end

H.run(scenario)
