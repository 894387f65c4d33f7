-- A query result. KEYS[1] epoch; ARGV: prefix, tenant:resource, hash of
-- the query. Returns {epoch, generation, entry} or {epoch, generation}.
local P, B, h = ARGV[1], ARGV[2], ARGV[3]
local e, g = counter(KEYS[1]), counter(P .. 'g:' .. B)
local v = redis.call('GET', P .. e .. ':' .. B .. ':' .. g .. ':q:' .. h)
if v then return {e, g, v} end
return {e, g}
