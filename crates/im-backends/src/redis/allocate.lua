-- Hands out the seqs of one batch, all or nothing (see `redis/mod.rs` for
-- the algorithm and why it is safe).
--
-- KEYS[1]     {prefix}:epoch         highest epoch any node used here
-- KEYS[2]     {prefix}:e{E}:live     "run_id:token" of the instance epoch E lives on
-- KEYS[3..]   {prefix}:e{E}:s:{conv} hash: n = last seq handed out, c = published ceiling
-- ARGV[1]     E, the caller's epoch
-- ARGV[2]     a fresh token, used if the marker must be created
-- ARGV[3]     the marker the caller's init floors were loaded under ('' = none)
-- ARGV[4..]   per counter: count, init floor ('' = none), ceiling to publish ('' = none)
--
-- Replies:
--   {'ok', marker, first seq per counter...}
--   {'short', marker, n, c per counter... (-1, -1 when missing)}   nothing handed out
--   {'epoch', highest epoch}                                        nothing done
--   {'stale', run_id}                                               nothing done

local epoch = tonumber(ARGV[1])
local top = tonumber(redis.call('GET', KEYS[1]) or '0')
if top > epoch then
  return {'epoch', top}
end

local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
if not run then
  return redis.error_reply('ERR no run_id in INFO server')
end
local live = redis.call('GET', KEYS[2])
if live then
  -- The epoch's counters were written by another server process (this one
  -- restarted from a snapshot, or a replica took over): they may be stale.
  if string.sub(live, 1, #run + 1) ~= run .. ':' then
    return {'stale', run}
  end
else
  -- New epoch, or the data was flushed: every counter restarts from its
  -- stored ceiling, under a marker no earlier load was made under.
  live = run .. ':' .. ARGV[2]
  redis.call('SET', KEYS[2], live)
end
if top < epoch then
  redis.call('SET', KEYS[1], epoch)
end

-- Floors loaded from the store are only good if the data did not vanish
-- (a flush) since the marker they were loaded under was read.
local may_init = live == ARGV[3]
local counters = #KEYS - 2
local counts = {}
local short = false
local states = {'short', live}
for i = 1, counters do
  local key = KEYS[i + 2]
  local a = 4 + (i - 1) * 3
  local count, floor, ceiling = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2]
  counts[i] = count
  local state = redis.call('HMGET', key, 'n', 'c')
  local n = state[1] and tonumber(state[1])
  local c = state[2] and tonumber(state[2])
  if not n and floor ~= '' and may_init then
    n = tonumber(floor)
    c = n
    redis.call('HSET', key, 'n', floor, 'c', floor)
  end
  if n and ceiling ~= '' and tonumber(ceiling) > c then
    -- Durable in the store before the caller sent it.
    c = tonumber(ceiling)
    redis.call('HSET', key, 'c', ceiling)
  end
  if not n then
    short = true
    states[#states + 1] = -1
    states[#states + 1] = -1
  else
    if n + count > c then
      short = true
    end
    states[#states + 1] = n
    states[#states + 1] = c
  end
end
if short then
  return states
end

local firsts = {'ok', live}
for i = 1, counters do
  firsts[#firsts + 1] = redis.call('HINCRBY', KEYS[i + 2], 'n', counts[i]) - counts[i] + 1
end
return firsts
