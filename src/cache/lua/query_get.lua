-- A query result. KEYS[1] epoch; ARGV: prefix, tenant:resource, hash of
-- the query, then tenant:resource of every further resource it reads. The
-- generation is the resources' generations joined with '.'. Returns
-- {epoch, generation, entry} or {epoch, generation}.
local P, B, h = ARGV[1], ARGV[2], ARGV[3]
local e, g = counter(KEYS[1]), counter(P .. 'g:' .. B)
for i = 4, #ARGV do g = g .. '.' .. counter(P .. 'g:' .. ARGV[i]) end
local v = redis.call('GET', P .. e .. ':' .. B .. ':' .. g .. ':q:' .. h)
if v then return {e, g, v} end
return {e, g}
