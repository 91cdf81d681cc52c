-- :Handoff {delegate|sessions|apply|diff|accept|reject|followup|cancel|discard|log} [args]
-- Only the command is defined here; every module is required when it is used.
if vim.g.loaded_handoff then
  return
end
vim.g.loaded_handoff = 1

vim.api.nvim_create_user_command('Handoff', function(opts)
  require('handoff.commands').run(opts)
end, {
  nargs = '*',
  range = true,
  bang = true,
  desc = 'Handoff: delegate work to a background coding agent, review and apply the results',
  complete = function(arglead, cmdline, pos)
    return require('handoff.commands').complete(arglead, cmdline, pos)
  end,
})
