-- Reads where one conversation's counter stands, for `current_seq`; writes
-- nothing (see `RedisSeqAllocator::current_seq` for what the reply means).
--
-- KEYS[1]  {prefix}:epoch          highest epoch any node used here
-- KEYS[2]  {prefix}:e{E}:live      the marker of epoch E
-- KEYS[3]  {prefix}:e{E}:s:{conv}  the counter (hash: n, c)
-- ARGV[1]  E, the epoch asked about
--
-- Replies:
--   {'epoch', top}   E is not the epoch Redis allocates in: ask about `top`
--   {'counter', n}   the last seq handed out (epoch E is Redis's)
--   {'restart'}      no trusted counter: the next allocation starts from the
--                    stored ceiling

local epoch = tonumber(ARGV[1])
-- Epoch 0 is used without ever being written here.
local top = tonumber(redis.call('GET', KEYS[1]) or '0')
if top ~= epoch then
  -- Later: the caller is behind. Earlier: the caller's epoch was bumped in
  -- the store but no script ran in it yet, so nodes still allocate in `top`.
  return {'epoch', top}
end
local live = redis.call('GET', KEYS[2])
if not live then
  -- No allocation in this epoch since the data was lost (or ever).
  return {'restart'}
end
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
if not run then
  return redis.error_reply('ERR no run_id in INFO server')
end
if string.sub(live, 1, #run + 1) ~= run .. ':' then
  -- Kept by another server process: the next allocation bumps the epoch and
  -- restarts from the ceilings.
  return {'restart'}
end
local n = redis.call('HGET', KEYS[3], 'n')
if not n then
  return {'restart'}
end
return {'counter', tonumber(n)}
