local V = ...
-- varint: LEB128 variable-length integers (protobuf / Kafka style). The readers of
-- runtime/fieldtypes/varint.py in Lua 5.2:
--   unsigned  an unsigned varint (0 .. 2^64-1)
--   signed    a zigzag-encoded signed varint (-2^63 .. 2^63-1): 0, -1, 1, -2 … as 0, 1, 2, 3 …
--
-- Seven bits a byte, least significant group first, the high bit set on every byte but the
-- last. A value takes at most 10 bytes: an 11th byte, or a 10th byte carrying bits above bit
-- 63, is refused. Redundant trailing zero groups (0x80 0x00) are accepted, as protobuf and Kafka
-- readers accept them. A value beyond 2^53 is a big value (V.int_bytes).
--
-- Errors: V.short where the varint runs past ``stop`` (its last byte is still to come), V.fail
-- where it cannot be one (too long, or beyond 64 bits), at the offsets Python reports.

local byte, char, floor = string.byte, string.char, math.floor

local M = { TYPES = {}, FUNCTIONS = {} }

local MAX_BYTES = 10
local TWO28, TWO32 = 2 ^ 28, 2 ^ 32

function M.new_context()
    return nil -- varints need no per-message state
end

-- The 4 big-endian bytes of ``w`` (0 <= w < 2^32).
local function word(w)
    return char(floor(w / 16777216), floor(w / 65536) % 256, floor(w / 256) % 256, w % 256)
end

-- The varint at ``pos``: its 64 bits as two numbers, the low 28 bits and the 36 above them
-- (so that each is exact), and the position after it.
local function read(buf, pos, stop)
    if pos >= stop then V.short(pos, "a varint") end
    local lo, hi = 0, 0
    local p, shift = pos, 0
    while true do
        if p >= stop then V.short(p, "a varint") end
        local b = byte(buf, p + 1)
        p = p + 1
        local group = b % 128
        if shift < 28 then
            lo = lo + group * 2 ^ shift
        else
            hi = hi + group * 2 ^ (shift - 28)
        end
        if b < 0x80 then break end
        shift = shift + 7
        if shift >= 7 * MAX_BYTES then
            V.fail(pos, string.format("varint longer than %d bytes", MAX_BYTES))
        end
    end
    if hi >= 2 ^ 36 then V.fail(pos, "varint overflows 64 bits") end
    return lo, hi, p
end

-- The integer hi * 2^28 + lo as a value: a number below 2^53, else a big one (``signed``: the
-- 64 bits as two's complement).
local function value(lo, hi, signed)
    if hi < 2 ^ 25 and not signed then return hi * TWO28 + lo end
    local low32 = (hi % 16) * TWO28 + lo
    local high32 = floor(hi / 16)
    return V.int_bytes(word(high32) .. word(low32), "big", signed)
end

local Unsigned = {}
Unsigned.__index = Unsigned

function Unsigned:read(buf, pos, stop, ctx)
    local lo, hi, after = read(buf, pos, stop)
    return value(lo, hi, false), after
end

local Signed = {}
Signed.__index = Signed

function Signed:read(buf, pos, stop, ctx)
    local lo, hi, after = read(buf, pos, stop)
    if hi < 2 ^ 25 then -- n below 2^53: n / 2, or -(n + 1) / 2 when n is odd
        local n = hi * TWO28 + lo
        if n % 2 == 0 then return n / 2, after end
        return -(n + 1) / 2, after
    end
    -- n >> 1, then for an odd n its complement: (n >> 1) ^ -(n & 1) in 64 bits
    local odd = lo % 2 == 1
    lo = floor(lo / 2) + (hi % 2) * 2 ^ 27
    hi = floor(hi / 2)
    if odd then
        lo = TWO28 - 1 - lo
        hi = 2 ^ 36 - 1 - hi
    end
    return value(lo, hi, true), after
end

local function no_arguments(class, name)
    local reader = setmetatable({}, class)
    return function(...)
        if select("#", ...) > 0 then error("varint." .. name .. " takes no arguments", 0) end
        return reader
    end
end

M.TYPES.unsigned = no_arguments(Unsigned, "unsigned")
M.TYPES.signed = no_arguments(Signed, "signed")

return M
