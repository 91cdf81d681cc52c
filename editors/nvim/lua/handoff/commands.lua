-- `:Handoff {subcommand}`: each subcommand sends one `workspace/executeCommand` of the
-- public contract (docs/DESIGN.md "Commands") to the handoff-lsp client. `delegate` lives in
-- delegate.lua, the diff view in review.lua.

local lsp = require('handoff.client')
local status = require('handoff.status')

local notify, get_client, exec = lsp.notify, lsp.get, lsp.exec

local M = {}

--- What the server says may be done with `s` now (`Session.actions`): the one table.
---@param name string  apply | applyHunks | reject | show | followUp | cancel | discard | resume
local function can(name)
  return function(s)
    return type(s.actions) == 'table' and vim.tbl_contains(s.actions, name)
  end
end

-- Session helpers -------------------------------------------------------------------------

local function parse_time(value)
  if type(value) == 'number' then
    return value > 1e11 and value / 1000 or value
  end
  if type(value) ~= 'string' then
    return nil
  end
  local y, mo, d, h, mi, s = value:match('^(%d+)-(%d+)-(%d+)[T ](%d+):(%d+):(%d+)')
  if not y then
    return nil
  end
  local t = os.time({ year = y, month = mo, day = d, hour = h, min = mi, sec = s, isdst = false })
  -- os.time read that as local time; the server writes UTC (…Z or +hh:mm).
  local utc_offset = os.time() - os.time(os.date('!*t') --[[@as osdateparam]])
  t = t + utc_offset
  local sign, oh, om = value:match('([+-])(%d%d):?(%d%d)$')
  if sign then
    local off = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == '+' and 1 or -1)
    t = t - off
  end
  return t
end

local function age(value)
  local t = parse_time(value)
  if not t then
    return '?'
  end
  local secs = math.max(0, os.time() - t)
  if secs < 60 then
    return secs .. 's ago'
  elseif secs < 3600 then
    return math.floor(secs / 60) .. 'm ago'
  elseif secs < 86400 then
    return math.floor(secs / 3600) .. 'h ago'
  end
  return math.floor(secs / 86400) .. 'd ago'
end

--- One line describing a session: title, state, age, files changed, cost.
---@param s table
---@return string
function M.format_session(s)
  local files = type(s.filesChanged) == 'table' and #s.filesChanged or 0
  local cost = tonumber(s.costUsd) or 0
  local hunks = s.state == 'ready' and tonumber(s.hunks) or 0
  return ('%s  [%s]  %s  %d file%s  $%.2f%s'):format(
    s.title or s.id,
    s.state or '?',
    age(s.createdAt),
    files,
    files == 1 and '' or 's',
    cost,
    hunks > 0 and ('  %d change%s left'):format(hunks, hunks == 1 and '' or 's') or ''
  )
end

--- Resolve a session id (or a unique prefix of one) among the known sessions.
---@param id string
---@return table? session, string? error
local function find_session(id)
  local matches = {}
  for _, s in ipairs(status.list()) do
    if s.id == id then
      return s
    end
    if vim.startswith(s.id, id) then
      matches[#matches + 1] = s
    end
  end
  if #matches == 1 then
    return matches[1]
  elseif #matches > 1 then
    return nil, ('"%s" matches %d sessions'):format(id, #matches)
  end
  -- Unknown here; let the server decide (it may know sessions of another window).
  return { id = id }
end

--- Pick the session to act on: the explicit id, else the one candidate, else ask.
---@param id string?
---@param filter fun(s: table): boolean
---@param what string  For messages ("to apply").
---@param callback fun(s: table)
---@param newest? boolean  With several candidates, take the newest instead of asking.
local function pick_session(id, filter, what, callback, newest)
  if id and id ~= '' then
    local s, err = find_session(id)
    if not s then
      return notify(err, vim.log.levels.ERROR)
    end
    return callback(s)
  end
  local candidates = vim.tbl_filter(filter, status.list())
  if #candidates == 0 then
    return notify('no session ' .. what, vim.log.levels.WARN)
  end
  if #candidates == 1 or newest then
    return callback(candidates[1]) -- list() is newest first
  end
  vim.ui.select(candidates, {
    prompt = 'Handoff: session ' .. what,
    format_item = M.format_session,
    kind = 'handoff.session',
  }, function(choice)
    if choice then
      callback(choice)
    end
  end)
end

local function client_for(session)
  if session.client_id then
    local client = vim.lsp.get_client_by_id(session.client_id)
    if client and not client:is_stopped() then
      return client
    end
  end
  return get_client()
end

-- Session commands ------------------------------------------------------------------------

--- Apply a ready session. With `markers`, conflicting hunks come in with conflict markers.
local function apply(session, markers)
  local args = { sessionId = session.id }
  if markers then
    args.conflictMarkers = true
  end
  exec(client_for(session), 'handoff.apply', args, function(result)
    result = type(result) == 'table' and result or {}
    local title = session.title or session.id
    local conflicts = tonumber(result.conflicts) or 0
    if result.applied then
      notify(('applied "%s"%s'):format(
        title,
        conflicts > 0 and (' with %d conflict(s) marked in the files'):format(conflicts) or ''
      ))
    elseif conflicts > 0 then
      local msg = '"%s" was not applied: %d conflict(s), see the diagnostics;'
        .. ' ":Handoff! apply %s" applies it with conflict markers'
      notify(msg:format(title, conflicts, session.id), vim.log.levels.WARN)
    else
      notify(('"%s" was not applied'):format(title), vim.log.levels.WARN)
    end
  end)
end

local function show(session)
  -- The server writes the session's report (summary, transcript, diff) and opens it through
  -- window/showDocument.
  exec(client_for(session), 'handoff.show', { sessionId = session.id })
end

local function review(session)
  local client = client_for(session)
  if not client then
    return
  end
  local caps = client.server_capabilities or {}
  local commands = vim.tbl_get(caps, 'executeCommandProvider', 'commands') or {}
  if not vim.tbl_contains(commands, 'handoff.preview') then
    return show(session) -- an older server: its report holds the diff
  end
  require('handoff.review').open(client, session, function(message)
    local title = session.title or session.id
    local msg = ('cannot preview "%s": %s; showing its report instead'):format(title, message)
    notify(msg, vim.log.levels.WARN)
    show(session)
  end)
end

local function followup(session, instruction)
  local function send(text)
    if not text or vim.trim(text) == '' then
      return
    end
    local args = { sessionId = session.id, instruction = text }
    exec(client_for(session), 'handoff.followUp', args, function()
      notify(('follow-up sent to "%s"'):format(session.title or session.id))
    end)
  end
  if instruction and instruction ~= '' then
    return send(instruction)
  end
  vim.ui.input({ prompt = 'Handoff follow-up: ' }, send)
end

local function simple(command, verb)
  return function(session)
    exec(client_for(session), command, { sessionId = session.id }, function()
      notify(('%s "%s"'):format(verb, session.title or session.id))
    end)
  end
end

local cancel = simple('handoff.cancel', 'cancelled')
local discard = simple('handoff.discard', 'discarded')

local function resume(session)
  local args = { sessionId = session.id, instruction = session.instruction }
  exec(client_for(session), 'handoff.followUp', args, function()
    notify(('resumed "%s"'):format(session.title or session.id))
  end)
end

-- How each of the server's action names shows in the menu (`reject` is per change: :Handoff reject).
local LABELS = {
  apply = { 'Apply', apply },
  applyHunks = { 'Review diff', review },
  followUp = { 'Follow up', followup },
  resume = { 'Resume', resume },
  cancel = { 'Cancel', cancel },
  discard = { 'Discard', discard },
  show = { 'Show transcript', show },
}

--- The session's actions (`Session.actions`, in the server's order), as menu entries.
local function actions_for(s)
  local actions = {}
  for _, name in ipairs(type(s.actions) == 'table' and s.actions or { 'show' }) do
    local entry = LABELS[name]
    if entry then
      actions[#actions + 1] = { label = entry[1], run = entry[2] }
    end
  end
  return actions
end

local function sessions_menu()
  local client = get_client()
  if not client then
    return
  end
  status.refresh(client, function(list, err)
    if not list then
      local msg = type(err) == 'table' and err.message or tostring(err)
      return notify('handoff.listSessions failed: ' .. msg, vim.log.levels.ERROR)
    end
    list = vim.tbl_filter(function(s)
      return s.state ~= 'discarded' -- gone for good; `handoff ls` still shows them
    end, list)
    if #list == 0 then
      return notify('no sessions')
    end
    vim.ui.select(list, {
      prompt = 'Handoff sessions',
      format_item = M.format_session,
      kind = 'handoff.session',
    }, function(session)
      if not session then
        return
      end
      local actions = actions_for(session)
      vim.ui.select(actions, {
        prompt = session.title or session.id,
        format_item = function(a)
          return a.label
        end,
        kind = 'handoff.action',
      }, function(action)
        if action then
          action.run(session)
        end
      end)
    end)
  end)
end

local function open_log()
  local config = vim.lsp.config.handoff or {}
  local cmd = type(config.cmd) == 'table' and config.cmd or {}
  for i, arg in ipairs(cmd) do
    local file = arg:match('^%-%-log%-file=(.+)$') or (arg == '--log-file' and cmd[i + 1])
    if file then
      return vim.cmd.tabedit(vim.fn.fnameescape(file))
    end
  end
  -- The LSP log holds the server's stderr (its log) and the RPC traffic.
  vim.cmd.tabedit(vim.fn.fnameescape(vim.lsp.get_log_path()))
end

---@type table<string, fun(args: string[], opts: table)>
M.subcommands = {
  delegate = function(args, opts)
    require('handoff.delegate').run(args, opts)
  end,
  sessions = function()
    sessions_menu()
  end,
  apply = function(args, opts)
    pick_session(args[1], can('apply'), 'ready to apply', function(s)
      apply(s, opts.bang)
    end, true)
  end,
  diff = function(args)
    pick_session(args[1], can('applyHunks'), 'ready to review', review)
  end,
  accept = function()
    require('handoff.hunks').accept()
  end,
  reject = function(args)
    require('handoff.hunks').reject(table.concat(args, ' '))
  end,
  followup = function(args)
    -- `followup [id] [instruction]`: the first word is an id only if it names a known session.
    local id, rest = nil, args
    if args[1] and (find_session(args[1]) or {}).client_id then
      id, rest = args[1], vim.list_slice(args, 2)
    end
    pick_session(id, can('followUp'), 'to follow up', function(s)
      followup(s, table.concat(rest, ' '))
    end)
  end,
  cancel = function(args)
    pick_session(args[1], can('cancel'), 'to cancel', cancel)
  end,
  discard = function(args)
    pick_session(args[1], can('discard'), 'to discard', discard)
  end,
  log = function()
    open_log()
  end,
}

local ORDER =
  { 'delegate', 'sessions', 'apply', 'diff', 'accept', 'reject', 'followup', 'cancel', 'discard', 'log' }
local TAKES_ID = { apply = true, diff = true, followup = true, cancel = true, discard = true }

--- Entry point of `:Handoff`.
---@param opts table  nvim_create_user_command opts
function M.run(opts)
  local args = vim.deepcopy(opts.fargs)
  local name = table.remove(args, 1) or 'sessions'
  local sub = M.subcommands[name]
  if not sub then
    return notify(
      ('unknown subcommand "%s"; use one of: %s'):format(name, table.concat(ORDER, ', ')),
      vim.log.levels.ERROR
    )
  end
  sub(args, opts)
end

--- Completion of `:Handoff`: subcommands, then session ids.
function M.complete(arglead, cmdline, _)
  local words = vim.split((cmdline:gsub('^%A*', '')), '%s+', { trimempty = false })
  -- words[1] is "Handoff" (possibly after a range), words[#words] is the word being typed.
  if #words <= 2 then
    return vim.tbl_filter(function(s)
      return vim.startswith(s, arglead)
    end, ORDER)
  end
  if #words == 3 and TAKES_ID[words[2]] then
    local ids = {}
    for _, s in ipairs(status.list()) do
      if vim.startswith(s.id, arglead) then
        ids[#ids + 1] = s.id
      end
    end
    return ids
  end
  return {}
end

return M
