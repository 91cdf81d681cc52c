-- The changes of ready sessions where they land, one by one: the lines a change replaces are
-- highlighted (DiffDelete) and the proposed lines shown under them as virtual lines (DiffAdd), in
-- the style of mini.diff's overlay and gitsigns' preview. The hunks come from
-- `handoff.preview {sessionId}` (`files[].hunks = {{id, range, newText, oldText}}`); extmarks keep
-- them where they are while the developer types.
--
-- `:Handoff accept` / `:Handoff reject [reason]` act on the hunk under the cursor (`handoff.apply
-- {sessionId, hunks}` / `handoff.reject {sessionId, hunks, reason?}`); `]h` / `[h` move between
-- hunks. The list is asked again whenever a ready session's result or count of hunks changes.

local lsp = require('handoff.client')

local M = {}

M.ns = vim.api.nvim_create_namespace('handoff.hunks')

---@class handoff.Hunk
---@field id string
---@field session_id string
---@field client_id integer
---@field title string
---@field mark integer  extmark over the replaced lines (or at the insertion point)
---@field virt integer?  extmark carrying the proposed lines
---@field new_text string
---@field old_text string

---@type table<integer, handoff.Hunk[]>  bufnr -> hunks shown there
local by_buf = {}
---@type table<string, string>  session id -> what its hunks were last asked for at
local asked = {}
local augroup ---@type integer?

local function signature(s)
  return table.concat({ tostring(s.resultCommit), tostring(s.hunks), tostring(s.updatedAt) }, '|')
end

local function lines_of(text)
  local lines = vim.split(text or '', '\n', { plain = true })
  if lines[#lines] == '' then
    lines[#lines] = nil -- the final line end
  end
  return lines
end

--- Remove the hunks of `session_id` (every session when nil) from every buffer.
local function clear(session_id)
  for bufnr, list in pairs(by_buf) do
    local kept = {}
    for _, h in ipairs(list) do
      if session_id == nil or h.session_id == session_id then
        if vim.api.nvim_buf_is_valid(bufnr) then
          pcall(vim.api.nvim_buf_del_extmark, bufnr, M.ns, h.mark)
          if h.virt then
            pcall(vim.api.nvim_buf_del_extmark, bufnr, M.ns, h.virt)
          end
        end
      else
        kept[#kept + 1] = h
      end
    end
    by_buf[bufnr] = #kept > 0 and kept or nil
  end
end

local function drop(bufnr, hunk)
  pcall(vim.api.nvim_buf_del_extmark, bufnr, M.ns, hunk.mark)
  if hunk.virt then
    pcall(vim.api.nvim_buf_del_extmark, bufnr, M.ns, hunk.virt)
  end
  by_buf[bufnr] = vim.tbl_filter(function(h)
    return h ~= hunk
  end, by_buf[bufnr] or {})
end

local function map_keys(bufnr)
  if vim.b[bufnr].handoff_hunk_keys then
    return
  end
  vim.b[bufnr].handoff_hunk_keys = true
  for lhs, fn in pairs({ [']h'] = M.next, ['[h'] = M.prev }) do
    if vim.fn.maparg(lhs, 'n') == '' then -- never over a mapping of the user's
      vim.keymap.set('n', lhs, fn, { buffer = bufnr, desc = 'Handoff: go to the next/previous change' })
    end
  end
end

--- Show `hunks` (wire objects) of `session` in `bufnr`.
local function render(bufnr, session, client_id, hunks)
  local count = vim.api.nvim_buf_line_count(bufnr)
  local list = by_buf[bufnr] or {}
  for _, h in ipairs(hunks) do
    if not h.file then
      local first = math.min(h.range.start.line, count)
      local last = h.range['end'].line + ((h.range['end'].character or 0) > 0 and 1 or 0)
      last = math.min(math.max(last, first), count) -- exclusive
      local virt_lines = {}
      for _, line in ipairs(lines_of(h.newText)) do
        virt_lines[#virt_lines + 1] = { { line, 'DiffAdd' } }
      end
      local label = { { ('  Handoff: %s (:Handoff accept / reject)'):format(session.title or session.id), 'DiagnosticHint' } }
      local hunk = {
        id = h.id,
        session_id = session.id,
        client_id = client_id,
        title = session.title or session.id,
        new_text = h.newText,
        old_text = h.oldText,
      }
      if last > first then -- lines replaced (or removed): highlight them, the new ones below
        local end_line = vim.api.nvim_buf_get_lines(bufnr, last - 1, last, false)[1] or ''
        hunk.mark = vim.api.nvim_buf_set_extmark(bufnr, M.ns, first, 0, {
          end_row = last - 1,
          end_col = #end_line,
          hl_group = 'DiffDelete',
          hl_eol = true,
          virt_text = label,
          sign_text = '~',
          sign_hl_group = 'DiffChange',
        })
        if #virt_lines > 0 then
          hunk.virt = vim.api.nvim_buf_set_extmark(bufnr, M.ns, last - 1, 0, { virt_lines = virt_lines })
        end
      else -- lines added: shown above the line they go before (below the last line at the end)
        local at_end = first >= count
        local row = at_end and math.max(count - 1, 0) or first
        hunk.mark = vim.api.nvim_buf_set_extmark(bufnr, M.ns, row, 0, {
          virt_lines = virt_lines,
          virt_lines_above = not at_end,
          virt_text = label,
          sign_text = '+',
          sign_hl_group = 'DiffAdd',
        })
      end
      list[#list + 1] = hunk
    end
  end
  if #list > 0 then
    by_buf[bufnr] = list
    map_keys(bufnr)
  end
end

--- Ask `client` for the hunks of `session` and show those of loaded buffers.
function M.refresh(client, session)
  client:request('workspace/executeCommand', {
    command = 'handoff.preview',
    arguments = { { sessionId = session.id } },
  }, function(err, result)
    if err or type(result) ~= 'table' then
      return -- not ready any more: the next session list says so
    end
    clear(session.id)
    for _, file in ipairs(result.files or {}) do
      local bufnr = vim.fn.bufnr(vim.uri_to_fname(file.uri))
      if bufnr ~= -1 and vim.api.nvim_buf_is_loaded(bufnr) and type(file.hunks) == 'table' then
        render(bufnr, session, client.id, file.hunks)
      end
    end
    pcall(vim.api.nvim_exec_autocmds, 'User', { pattern = 'HandoffHunks', modeline = false })
  end)
end

--- A new session list of `client_id`: show the hunks of the ready sessions, drop the others'.
function M.sync(client_id, sessions)
  local client = vim.lsp.get_client_by_id(client_id)
  local live = {}
  for _, s in ipairs(sessions) do
    if s.state == 'ready' and (tonumber(s.hunks) or 0) > 0 then
      live[s.id] = true
      if client and asked[s.id] ~= signature(s) then
        asked[s.id] = signature(s)
        M.refresh(client, s)
      end
    end
  end
  for id in pairs(asked) do
    if not live[id] then
      asked[id] = nil
      clear(id)
    end
  end
end

--- Start following the session lists (from the client's `on_init`; idempotent).
function M.watch()
  if augroup then
    return
  end
  augroup = vim.api.nvim_create_augroup('handoff.hunks', { clear = true })
  vim.api.nvim_create_autocmd('User', {
    group = augroup,
    pattern = 'HandoffSessions',
    callback = function(args)
      M.sync(args.data.client_id, args.data.sessions or {})
    end,
  })
  vim.api.nvim_create_autocmd('BufReadPost', { -- a file of a ready session opened later
    group = augroup,
    callback = function()
      asked = {}
      local per_client = {}
      for _, s in ipairs(require('handoff.status').list()) do
        per_client[s.client_id] = per_client[s.client_id] or {}
        table.insert(per_client[s.client_id], s)
      end
      for client_id, sessions in pairs(per_client) do
        M.sync(client_id, sessions)
      end
    end,
  })
end

--- The rows a hunk covers now (extmarks move with the text).
local function rows(bufnr, hunk)
  local pos = vim.api.nvim_buf_get_extmark_by_id(bufnr, M.ns, hunk.mark, { details = true })
  if not pos or not pos[1] then
    return nil
  end
  local last = pos[3] and pos[3].end_row or pos[1]
  return pos[1], math.max(last, pos[1])
end

--- The hunks of `bufnr`, in order, with their rows.
function M.list(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local out = {}
  for _, h in ipairs(by_buf[bufnr] or {}) do
    local first, last = rows(bufnr, h)
    if first then
      out[#out + 1] = vim.tbl_extend('force', h, { first = first, last = last })
    end
  end
  table.sort(out, function(a, b)
    return a.first < b.first
  end)
  return out
end

--- The hunk under the cursor (or nil, with a message).
local function under_cursor()
  local bufnr = vim.api.nvim_get_current_buf()
  local row = vim.api.nvim_win_get_cursor(0)[1] - 1
  for _, h in ipairs(M.list(bufnr)) do
    if row >= h.first and row <= h.last then
      return bufnr, h
    end
  end
  lsp.notify('no change of a session under the cursor (]h / [h go to one)', vim.log.levels.WARN)
end

local function original(bufnr, found)
  for _, h in ipairs(by_buf[bufnr] or {}) do
    if h.id == found.id and h.session_id == found.session_id then
      return h
    end
  end
end

--- `:Handoff accept`: apply the hunk under the cursor.
function M.accept()
  local bufnr, h = under_cursor()
  if not h then
    return
  end
  local client = vim.lsp.get_client_by_id(h.client_id)
  if not client then
    return lsp.notify('the handoff client has stopped', vim.log.levels.ERROR)
  end
  lsp.exec(client, 'handoff.apply', { sessionId = h.session_id, hunks = { h.id } }, function(result)
    if type(result) == 'table' and result.applied then
      local kept = original(bufnr, h)
      if kept then
        drop(bufnr, kept)
      end
      lsp.notify(('accepted a change of "%s"'):format(h.title))
    else
      lsp.notify(('the change of "%s" was not applied'):format(h.title), vim.log.levels.WARN)
    end
  end, bufnr)
end

--- `:Handoff reject [reason]`: take the hunk under the cursor out of the session; with a reason,
--- the agent is followed up with it.
function M.reject(reason)
  local bufnr, h = under_cursor()
  if not h then
    return
  end
  local client = vim.lsp.get_client_by_id(h.client_id)
  if not client then
    return lsp.notify('the handoff client has stopped', vim.log.levels.ERROR)
  end
  local args = { sessionId = h.session_id, hunks = { h.id } }
  reason = reason and vim.trim(reason) or ''
  if reason ~= '' then
    args.reason = reason
  end
  lsp.exec(client, 'handoff.reject', args, function()
    local kept = original(bufnr, h)
    if kept then
      drop(bufnr, kept)
    end
    lsp.notify(('rejected a change of "%s"%s'):format(h.title, reason ~= '' and '; the agent follows up' or ''))
  end, bufnr)
end

local function jump(forward)
  local row = vim.api.nvim_win_get_cursor(0)[1] - 1
  local list = M.list()
  local target
  for i = forward and 1 or #list, forward and #list or 1, forward and 1 or -1 do
    local h = list[i]
    if (forward and h.first > row) or (not forward and h.first < row) then
      target = h
      break
    end
  end
  if target then
    vim.api.nvim_win_set_cursor(0, { target.first + 1, 0 })
  else
    lsp.notify(('no %s change of a session'):format(forward and 'next' or 'previous'))
  end
end

function M.next()
  jump(true)
end

function M.prev()
  jump(false)
end

return M
