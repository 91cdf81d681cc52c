-- :checkhealth handoff

local M = {}

local health = vim.health

--- Run argv and return trimmed stdout, or nil and a message.
local function run(argv)
  local ok, proc = pcall(vim.system, argv, { text = true })
  if not ok then
    return nil, tostring(proc)
  end
  local res = proc:wait(20000)
  if res.code ~= 0 then
    local err = vim.trim((res.stderr or '') .. (res.stdout or ''))
    return nil, ('exit code %s%s'):format(res.code, err ~= '' and (': ' .. err) or '')
  end
  return vim.trim(res.stdout or '')
end

--- A small reader for the part of TOML that config files use: tables, dotted keys, and
--- single-line values. Returns a flat map "dotted.key" -> raw value text.
local function read_toml(path)
  local fd = io.open(path, 'r')
  if not fd then
    return nil
  end
  local flat, section = {}, ''
  for line in fd:lines() do
    line = vim.trim(line)
    local header = line:match('^%[%[?%s*([^%]]-)%s*%]%]?')
    if header then
      section = header:gsub('%s', ''):gsub('"', '')
    elseif line ~= '' and not vim.startswith(line, '#') then
      local key, value = line:match('^([%w_%.%-"]+)%s*=%s*(.-)%s*$')
      if key then
        key = key:gsub('"', '')
        flat[(section ~= '' and (section .. '.') or '') .. key] = value
      end
    end
  end
  fd:close()
  return flat
end

local function unquote(value)
  if not value then
    return nil
  end
  return value:match('^"(.-)"') or value:match("^'(.-)'") or value
end

--- The configuration sources Neovim can see: files at the root, environment, client config.
---@return { model: string?, agent: string?, agents: table<string, string>, sources: string[] }
local function visible_config(root)
  local found = { agents = {}, sources = {} }
  local function take(flat, prefix, where)
    if not flat then
      return
    end
    local used = false
    for key, value in pairs(flat) do
      if vim.startswith(key, prefix) then
        local k = key:sub(#prefix + 1)
        if k == 'model' then
          found.model, used = unquote(value), true
        elseif k == 'agent' then
          found.agent, used = unquote(value), true
        elseif k == 'agents' then -- inline table: agents = { aider = { command = [...] } }
          for name in value:gmatch('([%w_%-]+)%s*=%s*{') do
            found.agents[name], used = where, true
          end
        else
          local name = k:match('^agents%.([^%.]+)')
          if name then
            found.agents[name], used = where, true
          end
        end
      end
    end
    if used then
      found.sources[#found.sources + 1] = where
    end
  end
  if root then
    take(read_toml(vim.fs.joinpath(root, 'pyproject.toml')), 'tool.handoff.', 'pyproject.toml')
    take(read_toml(vim.fs.joinpath(root, '.handoff.toml')), '', '.handoff.toml')
  end
  local env_model = vim.env.HANDOFF_MODEL
  if env_model and env_model ~= '' then
    found.model = env_model
    found.sources[#found.sources + 1] = '$HANDOFF_MODEL'
  end
  local config = vim.lsp.config.handoff or {}
  for _, source in ipairs({
    { config.init_options, 'init_options' },
    { vim.tbl_get(config, 'settings', 'handoff'), 'settings.handoff' },
  }) do
    local t, where = source[1], source[2]
    if type(t) == 'table' then
      if type(t.model) == 'string' then
        found.model = t.model
      end
      if type(t.agent) == 'string' then
        found.agent = t.agent
      end
      for name in pairs(type(t.agents) == 'table' and t.agents or {}) do
        found.agents[name] = where
      end
      if t.model or t.agent or t.agents then
        found.sources[#found.sources + 1] = 'vim.lsp.config ' .. where
      end
    end
  end
  return found
end

local function check_neovim()
  if vim.fn.has('nvim-0.11') == 1 then
    health.ok('Neovim ' .. tostring(vim.version()))
  else
    health.error('Neovim 0.11 or newer is required (vim.lsp.config / vim.lsp.enable)')
  end
end

local function check_server()
  local config = vim.lsp.config.handoff
  if not config then
    health.error('no "handoff" LSP config found: is editors/nvim on the runtimepath?')
    return
  end
  if type(config.cmd) ~= 'table' then
    health.info('cmd is a function (e.g. a TCP connection); the executable is not checked')
    return
  end
  local exe = vim.fn.exepath(config.cmd[1])
  if exe == '' then
    health.error(('server executable "%s" not found'):format(config.cmd[1]), {
      'Install it from a clone of the Handoff repository: pipx install . (or uv tool install .)',
      "Or point Neovim at it: vim.lsp.config('handoff', { cmd = { '/path/to/handoff-lsp' } })",
    })
    return
  end
  health.ok('server executable: ' .. exe)
  local version, err = run({ exe, '--version' })
  if version then
    health.ok('server version: ' .. version)
  else
    health.error(exe .. ' --version failed: ' .. err)
  end
  if vim.lsp.is_enabled and not vim.lsp.is_enabled('handoff') then
    health.warn('the server is not enabled', { "Add vim.lsp.enable('handoff') to your config" })
  end
end

local function check_git()
  local exe = vim.fn.exepath('git')
  if exe == '' then
    health.error('git not found: Handoff runs every session in a git worktree')
    return
  end
  local version = run({ exe, '--version' })
  health.ok(('git: %s (%s)'):format(exe, version or '?'))
end

--- The buffer :checkhealth was called from (the report opens in a buffer of its own).
local function user_buffer()
  for _, buf in ipairs({ vim.api.nvim_get_current_buf(), vim.fn.bufnr('#') }) do
    if buf > 0 and vim.bo[buf].buftype == '' and vim.api.nvim_buf_get_name(buf) ~= '' then
      return buf
    end
  end
end

local function check_agent()
  local buf = user_buffer()
  local root = (buf and vim.fs.root(buf, '.git')) or vim.fs.root(vim.fn.getcwd(), '.git')
  if root then
    health.info('repository: ' .. root)
  else
    health.warn('neither the buffer nor the current directory is in a git repository')
  end
  local found = visible_config(root)
  local agent = found.agent or 'builtin'
  if agent ~= 'builtin' then
    if found.agents[agent] then
      health.ok(('agent "%s" (from %s)'):format(agent, found.agents[agent]))
    else
      local msg = ('agent "%s" is selected but no agents.%s entry was found'):format(agent, agent)
      health.warn(msg, {
        'Define it in .handoff.toml: [agents.' .. agent .. '] command = [...]  (or acp = [...])',
      })
    end
  elseif found.model then
    health.ok(('built-in agent with model "%s"'):format(found.model))
  else
    health.warn('no model configured for the built-in agent, and no external agent selected', {
      'Set HANDOFF_MODEL (a litellm model string), or model = "..." in .handoff.toml',
      'Or select an external agent: agent = "NAME" with [agents.NAME] command = [...]',
    })
  end
  if #found.sources > 0 then
    health.info('configuration seen in: ' .. table.concat(found.sources, ', '))
  end
end

local function check_clients()
  local clients = vim.lsp.get_clients({ name = 'handoff' })
  if #clients == 0 then
    health.info('no handoff-lsp client is running now')
    return
  end
  for _, client in ipairs(clients) do
    local caps = client.server_capabilities or {}
    local commands = vim.tbl_get(caps, 'executeCommandProvider', 'commands') or {}
    local msg = ('client %d running, root %s'):format(client.id, client.root_dir or '(none)')
    if vim.tbl_contains(commands, 'handoff.delegate') then
      health.ok(msg)
    else
      health.warn(msg .. ', but the server does not offer handoff.delegate')
    end
  end
  local text = require('handoff').status()
  health.info('sessions: ' .. (text ~= '' and text or 'none active'))
end

--- What the server says of every agent (handoff.agents): installed or not, and how to install it.
local function check_agents()
  local client = vim.lsp.get_clients({ name = 'handoff' })[1]
  if not client then
    health.info('start the server (open a file of a repository) to list the agents it can run')
    return
  end
  local buf = user_buffer()
  local arg = buf and { uri = vim.uri_from_bufnr(buf) } or {}
  local reply = client:request_sync('workspace/executeCommand',
    { command = 'handoff.agents', arguments = { arg } }, 10000, buf or 0)
  if not reply or reply.err or not reply.result then
    local why = reply and reply.err and reply.err.message or 'no answer'
    health.warn('the server did not list its agents: ' .. why)
    return
  end
  for _, a in ipairs(reply.result.agents or {}) do
    local label = ('%s%s (%s, %s)'):format(a.name, a.default and ' [default]' or '', a.kind, a.source)
    if a.found and a.found ~= vim.NIL then
      health.ok(label .. ': ' .. a.found)
    elseif a.default then
      health.warn(label .. ': not installed', { a.install })
    else
      health.info(label .. ': not installed (' .. a.install .. ')')
    end
  end
end

function M.check()
  health.start('handoff: editor')
  check_neovim()
  health.start('handoff: server')
  check_server()
  check_clients()
  health.start('handoff: git and agent')
  check_git()
  check_agent()
  health.start('handoff: agents')
  check_agents()
end

return M
