-- Numbers, stores and publishes one event, atomically.
-- KEYS: the topic's hash (epoch `e`, last offset `s`), its stream.
-- ARGV: an epoch to use if the topic has none, the encoded event, the stream's max length,
-- the keys' time to live (s), the channel, the max age (ms, 0 for none).
-- Publishes `<epoch> <offset> <ms> <event>`, where `ms` is the entry's time by Redis's clock
-- (the first half of its stream id), and returns {epoch, offset}.
local epoch = redis.call('HGET', KEYS[1], 'e')
-- An epoch that is not 1 to 64 letters and digits was not made here: start a new one, which
-- every hub then reads as a lost history (told), rather than publishing under it.
if not epoch or #epoch > 64 or not string.match(epoch, '^%w+$') then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 's', 1)
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'o', offset, 'd', ARGV[2])
local ms = string.match(id, '^(%d+)')
if ARGV[6] ~= '0' then
  local oldest = tonumber(ms) - tonumber(ARGV[6])
  if oldest > 0 then
    redis.call('XTRIM', KEYS[2], 'MINID', '~', oldest)
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], epoch .. ' ' .. offset .. ' ' .. ms .. ' ' .. ARGV[2])
return {epoch, offset}
