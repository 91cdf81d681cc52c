-- Review hunk by hunk: the code action on a bare selection asks for the instruction
-- (vim.ui.input), the session's two changes show as virtual lines, `]h` goes to each,
-- `:Handoff accept` takes one, `:Handoff reject <reason>` refuses the other and the agent follows
-- up with the reason. Run inside headless Neovim by tests/editors/nvim/test_review_nvim.py.
--
-- Environment (besides the harness's): HANDOFF_TEST_FILE, REVIEW_TASK_COPY (where the follow-up's
-- agent copies its task).

local here = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':h')
local H = dofile(here .. '/harness.lua')
local out, step, wait_for = H.out, H.step, H.wait_for

local function virtual_lines(bufnr)
  local texts = {}
  local ns = require('handoff.hunks').ns
  for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true })) do
    for _, line in ipairs(mark[4].virt_lines or {}) do
      texts[#texts + 1] = { row = mark[2], text = line[1][1], hl = line[1][2] }
    end
  end
  return texts
end

local function ready_session()
  for _, s in ipairs(require('handoff').sessions()) do
    if s.state == 'ready' then
      return s
    end
  end
end

local function scenario()
  local hunks = require('handoff.hunks')
  local bufnr = H.open(assert(vim.env.HANDOFF_TEST_FILE))

  local prompts = {}
  vim.ui.input = function(opts, on_confirm)
    prompts[#prompts + 1] = opts.prompt
    on_confirm('comment both results')
  end
  -- `return a - b` selected, no comment anywhere: the code action asks for the task.
  vim.api.nvim_win_set_cursor(0, { 6, 4 })
  local mark = #out.notifications
  vim.lsp.buf.code_action({
    apply = true,
    range = { start = { 6, 4 }, ['end'] = { 6, 16 } },
    filter = function(action)
      return action.title == 'Delegate to background agent'
    end,
  })
  wait_for('the delegation', function()
    return H.delegated_id(mark) ~= nil
  end)
  out.prompts = prompts
  local sid = H.delegated_id(mark)
  step('delegated')

  wait_for('two changes shown in the buffer', function()
    return #hunks.list(bufnr) == 2
  end)
  out.session_ready = H.session(sid)
  out.virtual = virtual_lines(bufnr)
  out.buffer_ready = H.buffer_text(bufnr)
  step('hunks shown')

  vim.api.nvim_win_set_cursor(0, { 1, 0 })
  vim.cmd('normal ]h')
  out.first_jump = vim.api.nvim_win_get_cursor(0)[1]
  vim.cmd('Handoff accept')
  wait_for('the accepted change in the buffer', function()
    return H.buffer_text(bufnr):find('# sum', 1, true) ~= nil
  end)
  wait_for('one change left', function()
    local s = H.session(sid)
    return s and tonumber(s.hunks) == 1 and #hunks.list(bufnr) == 1
  end)
  out.after_accept = H.buffer_text(bufnr)
  out.listed = require('handoff.commands').format_session(H.session(sid))
  step('accepted')

  vim.cmd('normal ]h')
  out.second_jump = vim.api.nvim_win_get_cursor(0)[1]
  vim.cmd('Handoff reject a comment that repeats the code is noise; say what it means')
  wait_for("the follow-up's task", function()
    return vim.uv.fs_stat(assert(vim.env.REVIEW_TASK_COPY)) ~= nil
  end)
  wait_for('the new change of the follow-up', function()
    local s = H.session(sid)
    if not (s and s.state == 'ready') then
      return false
    end
    for _, v in ipairs(virtual_lines(bufnr)) do
      if v.text:find('# a minus b', 1, true) then
        return true
      end
    end
    return false
  end)
  out.virtual_after = virtual_lines(bufnr)
  out.buffer_final = H.buffer_text(bufnr)
  out.actions_final = H.session(sid).actions
  out.diagnostics = vim.tbl_map(function(d)
    return { message = d.message, severity = d.severity, lnum = d.lnum }
  end, vim.diagnostic.get(bufnr))
  step('rejected')
  assert(ready_session())
end

H.run(scenario)
