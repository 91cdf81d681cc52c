-- The session outlives Neovim: phase "delegate" delegates a selection and quits while the agent
-- runs; phase "reopen" (a new Neovim) finds the session in the statusline and applies it.
-- Run inside headless Neovim by tests/editors/nvim/test_nvim_daemon.py.
--
-- Environment (besides the harness's): HANDOFF_TEST_FILE, HANDOFF_TEST_EXPECTED,
-- HANDOFF_TEST_PHASE ("delegate" or "reopen").

local here = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':h')
local H = dofile(here .. '/harness.lua')
local out, step, wait_for, statusline = H.out, H.step, H.wait_for, H.statusline

local function delegate()
  local bufnr = H.open(assert(vim.env.HANDOFF_TEST_FILE))
  vim.ui.input = function(_, on_confirm)
    on_confirm('add a comment')
  end
  vim.cmd('normal! ggVj\27')
  vim.cmd("'<,'>Handoff delegate")
  wait_for('the session to run', function()
    return statusline():find('running') ~= nil
  end)
  out.status_running = statusline()
  out.sessions = require('handoff').sessions()
  out.buffer = H.buffer_text(bufnr)
  step('delegated')
end

local function reopen()
  local expected = H.read_file(assert(vim.env.HANDOFF_TEST_EXPECTED))
  local bufnr = H.open(assert(vim.env.HANDOFF_TEST_FILE))
  wait_for('the session to be listed ready', function()
    return statusline():find('ready') ~= nil
  end)
  out.status_ready = statusline()
  out.sessions = require('handoff').sessions()
  vim.cmd('Handoff apply')
  local ok = pcall(wait_for, 'the buffer to hold the expected text', function()
    return H.buffer_text(bufnr) == expected
  end)
  out.buffer_after_apply = H.buffer_text(bufnr)
  if not ok then
    error('the buffer never reached the expected text', 0)
  end
  step('applied')
end

H.run(vim.env.HANDOFF_TEST_PHASE == 'reopen' and reopen or delegate)
