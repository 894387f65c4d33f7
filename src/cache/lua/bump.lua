-- After an outage: a new epoch, so no entry written before it is read
-- again (they expire by their TTL), and near caches empty themselves.
-- KEYS[1] epoch; ARGV: channel ('' without near caches).
counter(KEYS[1])
local e = redis.call('INCR', KEYS[1])
if ARGV[1] ~= '' then redis.call('PUBLISH', ARGV[1], '*') end
return e
