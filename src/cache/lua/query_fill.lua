-- Stores a query result computed at (epoch, generation) if both are still
-- current: a write committed meanwhile moved a generation, and the result
-- may predate it. KEYS[1] epoch; ARGV: prefix, tenant:resource, hash,
-- epoch, generation, ttl ms, entry, then the further resources' bases (as
-- for query_get).
local P, B, h, e, g, ttl, v = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local now = redis.call('GET', P .. 'g:' .. B)
if not now then return 0 end
for i = 8, #ARGV do
  local x = redis.call('GET', P .. 'g:' .. ARGV[i])
  if not x then return 0 end
  now = now .. '.' .. x
end
if redis.call('GET', KEYS[1]) ~= e or now ~= g then return 0 end
redis.call('SET', P .. e .. ':' .. B .. ':' .. g .. ':q:' .. h, v, 'PX', ttl)
return 1
