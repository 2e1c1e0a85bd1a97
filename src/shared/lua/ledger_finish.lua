-- Moves finished records into the ledger stream and forgets their "started" entries, atomically,
-- so a record is either still started (and the sweeper will finalise it) or in the stream.
-- KEYS[1]: stream, KEYS[2]: the node's started hash, KEYS[3]: set of nodes with started hashes.
-- ARGV: node, then request_id, record pairs. Returns the number added.
local n = 0
for i = 2, #ARGV, 2 do
  redis.call('XADD', KEYS[1], '*', 'r', ARGV[i + 1])
  redis.call('HDEL', KEYS[2], ARGV[i])
  n = n + 1
end
if redis.call('HLEN', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[1])
end
return n
