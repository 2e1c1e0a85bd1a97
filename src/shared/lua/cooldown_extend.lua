-- Cooldown deadlines only grow. KEYS[1]: deadline (ms since the epoch). ARGV[1]: proposed.
-- Returns the deadline in force.
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local new = tonumber(ARGV[1])
if new > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[1])
  return new
end
return cur
