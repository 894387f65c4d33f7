-- Stores records read after a miss, each only where its lease is still in
-- place: an invalidation since the miss deleted the lease (or moved the
-- epoch or the record generation, so the key is another), and the stale
-- read is then not stored. KEYS[1] epoch; ARGV: prefix, tenant:resource,
-- ttl ms, then (id, token, entry) triples. Returns how many were stored.
local P, B, ttl = ARGV[1], ARGV[2], ARGV[3]
local e, rg = redis.call('GET', KEYS[1]), redis.call('GET', P .. 'rg:' .. B)
if not e or not rg then return 0 end
local base = P .. e .. ':' .. B .. ':' .. rg .. ':r:'
local n = 0
for i = 4, #ARGV, 3 do
  local k = base .. ARGV[i]
  if redis.call('GET', k) == 'L' .. ARGV[i + 1] then
    redis.call('SET', k, ARGV[i + 2], 'PX', ttl)
    n = n + 1
  end
end
return n
