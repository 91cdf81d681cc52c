-- The last `handoff/sessions` list of each client, and the statusline text made from it.
--
-- Every change fires `User HandoffSessions` (data = { sessions = ..., client_id = ... }) and
-- redraws the statuslines.

local M = {}

---@type table<integer, table[]>  client id -> sessions as last reported
local by_client = {}
local augroup ---@type integer?

-- States that still need the developer (or the agent); the others are history.
local SHOWN = { 'running', 'queued', 'ready', 'failed', 'interrupted' }

local function options()
  return require('handoff').options
end

local function watch_clients()
  if augroup then
    return
  end
  augroup = vim.api.nvim_create_augroup('handoff.status', { clear = true })
  -- Forget the sessions of a client that went away (its server will report them again).
  vim.api.nvim_create_autocmd('LspDetach', {
    group = augroup,
    callback = function(args)
      local id = args.data.client_id
      vim.schedule(function()
        local client = vim.lsp.get_client_by_id(id)
        if by_client[id] and (not client or client:is_stopped()) then
          M.set(id, {})
          by_client[id] = nil
        end
      end)
    end,
  })
end

local function notify_transitions(old, new)
  local wanted = {}
  for _, s in ipairs(options().notify_states or {}) do
    wanted[s] = true
  end
  local before = {}
  for _, s in ipairs(old) do
    before[s.id] = s.state
  end
  for _, s in ipairs(new) do
    if wanted[s.state] and before[s.id] and before[s.id] ~= s.state then
      local hint = s.state == 'ready' and ' (:Handoff apply / :Handoff diff)' or ''
      local level = s.state == 'ready' and vim.log.levels.INFO or vim.log.levels.WARN
      local msg = ('Handoff: "%s" is %s%s'):format(s.title or s.id, s.state, hint)
      if s.error and s.error ~= vim.NIL and s.error ~= '' then
        msg = msg .. ': ' .. s.error
      end
      vim.notify(msg, level)
    end
  end
end

--- Replace the sessions of one client.
---@param client_id integer
---@param sessions table[]
function M.set(client_id, sessions)
  watch_clients()
  local old = by_client[client_id]
  by_client[client_id] = sessions
  if old then
    notify_transitions(old, sessions)
  end
  pcall(vim.api.nvim_exec_autocmds, 'User', {
    pattern = 'HandoffSessions',
    modeline = false,
    data = { client_id = client_id, sessions = sessions },
  })
  pcall(vim.cmd.redrawstatus, { bang = true })
end

--- Handler of the `handoff/sessions` notification.
function M.on_sessions(err, result, ctx)
  if err or type(result) ~= 'table' or type(result.sessions) ~= 'table' then
    return
  end
  M.set(ctx.client_id, result.sessions)
end

--- Ask a client for its sessions (`handoff.listSessions`) and store the answer.
---@param client vim.lsp.Client
---@param callback? fun(sessions: table[]?, err: any)
function M.refresh(client, callback)
  local ok = client:request('workspace/executeCommand', {
    command = 'handoff.listSessions',
    arguments = { vim.empty_dict() },
  }, function(err, result)
    if not err and type(result) == 'table' and type(result.sessions) == 'table' then
      M.set(client.id, result.sessions)
    end
    if callback then
      callback(not err and M.list() or nil, err)
    end
  end)
  if not ok and callback then
    callback(nil, 'the handoff client has stopped')
  end
end

--- All known sessions, newest first; each carries `client_id`.
---@return table[]
function M.list()
  local all = {}
  for client_id, sessions in pairs(by_client) do
    for _, s in ipairs(sessions) do
      all[#all + 1] = vim.tbl_extend('force', s, { client_id = client_id })
    end
  end
  table.sort(all, function(a, b)
    local ka, kb = tostring(a.createdAt or ''), tostring(b.createdAt or '')
    if ka == kb then
      return tostring(a.id) > tostring(b.id)
    end
    return ka > kb
  end)
  return all
end

--- Number of sessions in each state.
---@return table<string, integer>
function M.counts()
  local counts = {}
  for _, sessions in pairs(by_client) do
    for _, s in ipairs(sessions) do
      counts[s.state] = (counts[s.state] or 0) + 1
    end
  end
  return counts
end

--- "Handoff: 2 running, 1 ready", or "" when no session needs attention.
---@return string
function M.text()
  local counts = M.counts()
  local parts = {}
  for _, state in ipairs(SHOWN) do
    if (counts[state] or 0) > 0 then
      parts[#parts + 1] = ('%d %s'):format(counts[state], state)
    end
  end
  if #parts == 0 then
    return ''
  end
  return (options().status_prefix or '') .. table.concat(parts, ', ')
end

return M
