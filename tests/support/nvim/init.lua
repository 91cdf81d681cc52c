-- init.lua of the headless Neovim that tests/editors/nvim/test_nvim.py drives.
-- Paths come from the environment the test sets.
vim.g.loaded_python3_provider = 0 -- else every Python file costs ~3 s to open
vim.g.loaded_node_provider = 0
vim.g.loaded_perl_provider = 0
vim.g.loaded_ruby_provider = 0
vim.o.swapfile = false
vim.o.shortmess = vim.o.shortmess .. 'I'

vim.opt.runtimepath:prepend((assert(vim.env.HANDOFF_NVIM_PLUGIN, 'HANDOFF_NVIM_PLUGIN')))

vim.lsp.log.set_level(vim.log.levels.DEBUG)
local cmd = { (assert(vim.env.HANDOFF_LSP, 'HANDOFF_LSP')) }
if vim.env.HANDOFF_SERVER_LOG then
  vim.list_extend(cmd, { '--log-file', vim.env.HANDOFF_SERVER_LOG })
end
vim.lsp.config('handoff', { cmd = cmd })
vim.lsp.enable('handoff')
