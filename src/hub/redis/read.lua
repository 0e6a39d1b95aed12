-- Reads a topic's epoch, head and newest events at once.
-- KEYS: the topic's hash, its stream.
-- ARGV: how many events at most, the epoch the reader holds, the newest offset it holds.
-- Returns {} for a topic Redis holds nothing for, else {epoch, head, entries, now}, where the
-- entries are the stream's newest (id and fields, newest first) and `now` is Redis's clock in
-- ms, so a reader can tell the age of each entry by the clock that stamped it.
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  return {}
end
local head = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local count = tonumber(ARGV[1])
if ARGV[2] == epoch and head - tonumber(ARGV[3]) < count then
  count = head - tonumber(ARGV[3])
end
local events = {}
if count > 0 then
  events = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', count)
end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return {epoch, tostring(head), events, tostring(ms)}
