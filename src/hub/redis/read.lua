-- Reads a topic's epoch, head and newest events at once.
-- KEYS: the topic's hash, its stream.
-- ARGV: how many events at most, the epoch the reader holds, the newest offset it holds.
-- Returns {} for a topic Redis holds nothing for, else {epoch, head, entries, now}: the stream's
-- newest entries (id and fields, newest first) until they hold `want` distinct offsets (all
-- those after the reader's, when it holds the current epoch), and Redis's clock in ms, so a
-- reader can tell the age of each entry by the clock that stamped it. Entries without a usable
-- offset are returned too (the reader counts them) but never take a wanted one's place; at most
-- `want` * 2 + 100 entries are looked at.
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  return {}
end
local head = tonumber(redis.call('HGET', KEYS[1], 's') or '0') or 0
local want = tonumber(ARGV[1])
local after = 0
if ARGV[2] == epoch then
  after = tonumber(ARGV[3]) or 0
  if head - after < want then
    want = head - after
  end
end
local events = {}
local seen = {}
local distinct = 0
local scanned = 0
local from = '+'
while want > 0 and distinct < want and scanned < want * 2 + 100 do
  local batch = redis.call('XREVRANGE', KEYS[2], from, '-', 'COUNT', math.min(want - distinct + 16, 512))
  if #batch == 0 then
    break
  end
  for _, entry in ipairs(batch) do
    if distinct >= want then
      break
    end
    scanned = scanned + 1
    events[#events + 1] = entry
    local fields = entry[2]
    local offset = nil
    for i = 1, #fields, 2 do
      if fields[i] == 'o' then
        offset = tonumber(fields[i + 1])
      end
    end
    if offset and offset > after and offset <= head and not seen[offset] then
      seen[offset] = true
      distinct = distinct + 1
    end
  end
  from = '(' .. batch[#batch][1]
end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return {epoch, tostring(head), events, tostring(ms)}
