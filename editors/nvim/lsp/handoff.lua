-- Default configuration of the Handoff language server for Neovim 0.11+.
--
-- Enable it with `vim.lsp.enable('handoff')`; override any field with
-- `vim.lsp.config('handoff', { ... })` (see `:help handoff-config`).

---@type vim.lsp.Config
return {
  cmd = { 'handoff-lsp' },
  -- Handoff works on git repositories; the session worktrees hang off the repository root.
  root_markers = { '.git' },
  -- filetypes = nil: attach to every file (a TODO or a selection can be delegated anywhere).
  -- The configuration object itself (docs/DESIGN.md "Configuration"), e.g. { agent = 'aider' }.
  init_options = vim.empty_dict(), -- an empty JSON object (a plain {} would be sent as [])
  -- This client asks for the instruction itself: the server's code action on a bare selection
  -- then names `handoff.client.delegatePrompt` (below) instead of failing for want of a task.
  capabilities = { experimental = { handoff = { prompt = true } } },
  commands = {
    ['handoff.client.delegatePrompt'] = function(command, ctx)
      require('handoff.delegate').prompt(command, ctx)
    end,
  },
  handlers = {
    ['handoff/sessions'] = function(err, result, ctx)
      require('handoff.status').on_sessions(err, result, ctx)
    end,
  },
  on_init = function(client)
    -- Fill the session list right away (sessions survive a server restart).
    require('handoff.status').refresh(client)
    require('handoff.hunks').watch()
  end,
}
