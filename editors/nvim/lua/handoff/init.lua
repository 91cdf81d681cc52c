-- Handoff for Neovim: delegate a selection or a TODO to a background coding agent.
--
-- Nothing here is mandatory: `vim.lsp.enable('handoff')` is the whole setup.
-- `require('handoff').setup(opts)` only overrides the defaults below.

local M = {}

---@class handoff.Options
---@field status_prefix? string  Text before the counts in `status()` (default "Handoff: ").
---@field notify_states? string[]  Notify when a session reaches one of these states.
---@field lsp? vim.lsp.Config  Passed to `vim.lsp.config('handoff', ...)`.

---@type handoff.Options
M.options = {
  status_prefix = 'Handoff: ',
  notify_states = { 'ready', 'failed', 'interrupted' },
}

--- Override defaults. Does not start anything: enable the server with `vim.lsp.enable('handoff')`.
---@param opts? handoff.Options
function M.setup(opts)
  opts = opts or {}
  local lsp = opts.lsp
  opts.lsp = nil
  M.options = vim.tbl_deep_extend('force', M.options, opts)
  if lsp then
    vim.lsp.config('handoff', lsp)
  end
end

--- A short text for any statusline: "Handoff: 1 running, 1 ready", or "" when idle.
---@return string
function M.status()
  return require('handoff.status').text()
end

--- The sessions last reported by the server(s) (docs/DESIGN.md `Session` objects), newest first.
---@return table[]
function M.sessions()
  return require('handoff.status').list()
end

return M
