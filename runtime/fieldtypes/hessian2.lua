local V = ...
-- hessian2: Hessian 2.0 values as Dubbo (apache/dubbo-hessian-lite) writes them. The readers of
-- runtime/fieldtypes/hessian2.py in Lua 5.2, value for value and error for error:
--   string   a string (any form, chunks included), or null ('N')
--   int      an int or a long, in any of their forms
--   any      any one value (with the class definitions before it), kept as its bytes
--   map      an untyped ('H') or typed ('M') map, or null: strings, ints, longs, booleans, nulls
--            and doubles become values, anything else the bytes of its encoding
-- and the function arg_count (the number of parameters a Dubbo descriptor declares).
--
-- Strings count UTF-16 code units, like Java: a character outside the BMP is two units, written
-- as two 3-byte surrogates (CESU-8) or as one 4-byte UTF-8 character; the surrogates are paired
-- when the string is read. The per-message context holds the class definitions and the type
-- names later values of the same message refer to by number.
--
-- Errors: V.short where the value runs past ``stop`` (a length, count or chunk that the bytes
-- before ``stop`` cannot hold), V.fail where the bytes cannot be the value, both at the offset
-- the Python reader reports.

local byte, sub, find, gsub, char = string.byte, string.sub, string.find, string.gsub, string.char
local format, floor = string.format, math.floor

local M = { TYPES = {}, FUNCTIONS = {} }

local MAX_DEPTH = 64

-- The per-message context: class definitions ({name, fields}) and type names, in the order
-- they came.
function M.new_context()
    return { classes = {}, types = {} }
end

local function code_text(code)
    return format("0x%02x", code)
end

-- A name quoted on one line for a message (control characters and quotes as \xNN).
local function quoted(name)
    return "'" .. gsub(name, "[%c']", function(c) return format("\\x%02x", byte(c)) end) .. "'"
end

-- The signed big-endian integer of ``n`` bytes at ``pos`` (before the bound: checked).
local function signed_at(buf, pos, n)
    return V.int_bytes(sub(buf, pos + 1, pos + n), "big", true)
end

-- ---- ints and doubles ---------------------------------------------------------------------

-- An int (any int form; with ``longs`` any long form too) at ``pos``: value, position after.
local function int_at(buf, pos, stop, longs)
    if pos >= stop then V.short(pos, "an int") end
    local code = byte(buf, pos + 1)
    if code >= 0x80 and code <= 0xBF then
        return code - 0x90, pos + 1
    end
    if code >= 0xC0 and code <= 0xCF then
        if pos + 2 > stop then V.short(pos, "int") end
        return (code - 0xC8) * 256 + byte(buf, pos + 2), pos + 2
    end
    if code >= 0xD0 and code <= 0xD7 then
        if pos + 3 > stop then V.short(pos, "int") end
        return (code - 0xD4) * 65536 + byte(buf, pos + 2) * 256 + byte(buf, pos + 3), pos + 3
    end
    if code == 0x49 then -- 'I'
        if pos + 5 > stop then V.short(pos, "int") end
        return signed_at(buf, pos + 1, 4), pos + 5
    end
    if longs then
        if code >= 0xD8 and code <= 0xEF then
            return code - 0xE0, pos + 1
        end
        if code >= 0xF0 then
            if pos + 2 > stop then V.short(pos, "long") end
            return (code - 0xF8) * 256 + byte(buf, pos + 2), pos + 2
        end
        if code >= 0x38 and code <= 0x3F then
            if pos + 3 > stop then V.short(pos, "long") end
            return (code - 0x3C) * 65536 + byte(buf, pos + 2) * 256 + byte(buf, pos + 3), pos + 3
        end
        if code == 0x59 then -- a long written as a 32-bit int
            if pos + 5 > stop then V.short(pos, "long") end
            return signed_at(buf, pos + 1, 4), pos + 5
        end
        if code == 0x4C then -- 'L'
            if pos + 9 > stop then V.short(pos, "long") end
            return signed_at(buf, pos + 1, 8), pos + 9
        end
    end
    V.fail(pos, "expected an int, found code " .. code_text(code))
end

-- A double at ``pos`` (its code is one of a double's): value (a V.float), position after.
local function double_at(buf, pos, stop)
    local code = byte(buf, pos + 1)
    if code == 0x5B then return V.float(0.0), pos + 1 end
    if code == 0x5C then return V.float(1.0), pos + 1 end
    if code == 0x5D then
        if pos + 2 > stop then V.short(pos, "double") end
        return V.float(signed_at(buf, pos + 1, 1)), pos + 2
    end
    if code == 0x5E then
        if pos + 3 > stop then V.short(pos, "double") end
        return V.float(signed_at(buf, pos + 1, 2)), pos + 3
    end
    if code == 0x5F then
        -- Java reads this form as thousandths in an int (BC_DOUBLE_MILL), not as a float32
        if pos + 5 > stop then V.short(pos, "double") end
        return V.float(0.001 * signed_at(buf, pos + 1, 4)), pos + 5
    end
    if code == 0x44 then -- 'D'
        if pos + 9 > stop then V.short(pos, "double") end
        return V.float(V.float_bytes(sub(buf, pos + 2, pos + 9), "big")), pos + 9
    end
    V.fail(pos, "expected a double, found code " .. code_text(code))
end

-- ---- strings ------------------------------------------------------------------------------

-- The UTF-16 units of the UTF-8 text ``buf[start:stop]``, a surrogate written on its own (as
-- CESU-8 writes it) counting as one: the count, or nil and the offset of the first byte that
-- does not start a whole UTF-8 character.
local function utf16_units(buf, start, stop)
    local units = 0
    local i = start
    while i < stop do
        local c = byte(buf, i + 1)
        local n, low, high = 0, 0x80, 0xBF
        if c < 0x80 then
            n = 0
        elseif c >= 0xC2 and c <= 0xDF then
            n = 1
        elseif c >= 0xE0 and c <= 0xEF then
            n = 2 -- (0xED 0xA0-0xBF: a surrogate, taken as a character of its own)
            if c == 0xE0 then low = 0xA0 end
        elseif c >= 0xF0 and c <= 0xF4 then
            n = 3
            if c == 0xF0 then low = 0x90 elseif c == 0xF4 then high = 0x8F end
        else
            return nil, i
        end
        for k = 1, n do
            local d = i + k < stop and byte(buf, i + k + 1) or nil
            local lo, hi = 0x80, 0xBF
            if k == 1 then lo, hi = low, high end
            if d == nil or d < lo or d > hi then return nil, i end
        end
        units = units + (n == 3 and 2 or 1)
        i = i + n + 1
    end
    return units
end

-- ``n`` UTF-16 units of text at ``pos``, appended to ``parts``: the position after them. Every
-- unit takes a byte at least, so the next ``n`` bytes are read, cut back to the last whole
-- character, and what they held is subtracted, until no unit is left (Python's walk, whose
-- offsets the errors keep).
local function read_units(buf, pos, stop, n, parts)
    while n > 0 do
        local take = pos + n
        if take > stop then V.short(pos, "string") end
        local chunk = sub(buf, pos + 1, take)
        if not find(chunk, "[\128-\255]") then -- ASCII: one unit a byte
            parts[#parts + 1] = chunk
            return take
        end
        local j = n - 1
        local low = n > 4 and n - 4 or 0
        while j > low and byte(chunk, j + 1) >= 0x80 and byte(chunk, j + 1) < 0xC0 do
            j = j - 1
        end
        local lead = byte(chunk, j + 1)
        local width = lead < 0x80 and 1 or lead < 0xE0 and 2 or lead < 0xF0 and 3 or 4
        local cut = (j + width <= n) and n or j
        if cut == 0 then
            -- the first character has more bytes than units are left: take it whole
            cut = width
            if pos + cut > stop then V.short(pos, "string") end
        end
        local units, bad = utf16_units(buf, pos, pos + cut)
        if units == nil then V.fail(bad, "invalid UTF-8 in a string") end
        if units > n then V.fail(pos, "a character crosses the end of the string") end
        parts[#parts + 1] = sub(buf, pos + 1, pos + cut)
        n = n - units
        pos = pos + cut
    end
    return pos
end

-- The 4-byte UTF-8 character of a surrogate pair, each surrogate in its 3 bytes.
local function pair(h2, h3, l2, l3)
    local high = 0xD000 + (byte(h2) - 0x80) * 64 + (byte(h3) - 0x80)
    local low = 0xD000 + (byte(l2) - 0x80) * 64 + (byte(l3) - 0x80)
    local c = 0x10000 + (high - 0xD800) * 1024 + (low - 0xDC00)
    return char(0xF0 + floor(c / 262144), 0x80 + floor(c / 4096) % 64,
        0x80 + floor(c / 64) % 64, 0x80 + c % 64)
end

-- A string (not null) at ``pos``, in any form including chunks: text, position after.
local function string_at(buf, pos, stop)
    if pos >= stop then V.short(pos, "a string") end
    local start = pos
    local code = byte(buf, pos + 1)
    local parts, chunks = {}, 0
    while true do
        local n, final
        if code < 0x20 then
            n, final = code, true
            pos = pos + 1
        elseif code >= 0x30 and code <= 0x33 then
            if pos + 2 > stop then V.short(pos, "string length") end
            n, final = (code - 0x30) * 256 + byte(buf, pos + 2), true
            pos = pos + 2
        elseif code == 0x53 or code == 0x52 then -- 'S' final chunk, 'R' chunk followed by more
            if pos + 3 > stop then V.short(pos, "string length") end
            n, final = byte(buf, pos + 2) * 256 + byte(buf, pos + 3), code == 0x53
            pos = pos + 3
        else
            local what = chunks > 0 and "string chunk" or "string"
            V.fail(pos, "expected a " .. what .. ", found code " .. code_text(code))
        end
        pos = read_units(buf, pos, stop, n, parts)
        chunks = chunks + 1
        if final then break end
        if pos >= stop then V.short(pos, "string chunk") end -- (its rest is still to come)
        code = byte(buf, pos + 1)
    end
    local text = table.concat(parts)
    if find(text, "\237[\160-\191]") then
        -- pair the surrogates Java wrote one by one; a lone one is not text
        text = gsub(text, "\237([\160-\175])([\128-\191])\237([\176-\191])([\128-\191])", pair)
        if find(text, "\237[\160-\191]") then
            V.fail(start, "string holds an unpaired UTF-16 surrogate")
        end
    end
    return text, pos
end

-- ---- skipping any value -------------------------------------------------------------------

-- The total size of a value whose code fixes it (0: any other value).
local FIXED = {}
for c = 0, 255 do FIXED[c] = 0 end
for c = 0x80, 0xBF do FIXED[c] = 1 end -- int, one byte
for c = 0xC0, 0xCF do FIXED[c] = 2 end
for c = 0xD0, 0xD7 do FIXED[c] = 3 end
for c = 0xD8, 0xEF do FIXED[c] = 1 end -- long, one byte
for c = 0xF0, 0xFF do FIXED[c] = 2 end
for c = 0x38, 0x3F do FIXED[c] = 3 end
for c = 0x20, 0x2F do FIXED[c] = 1 + c - 0x20 end -- short binary
FIXED[0x44] = 9 -- 'D' double
FIXED[0x46] = 1 -- 'F'
FIXED[0x49] = 5 -- 'I'
FIXED[0x4A] = 9 -- date, milliseconds
FIXED[0x4B] = 5 -- date, minutes
FIXED[0x4C] = 9 -- 'L'
FIXED[0x4E] = 1 -- 'N'
FIXED[0x54] = 1 -- 'T'
FIXED[0x59] = 5 -- long as int
FIXED[0x5B], FIXED[0x5C], FIXED[0x5D], FIXED[0x5E], FIXED[0x5F] = 1, 1, 2, 3, 5

local COMPLEX = {} -- code → function(buf, pos, stop, ctx, depth): the position after the value
local skip

-- The position after the one value (with any class definitions before it) at ``pos``.
skip = function(buf, pos, stop, ctx, depth)
    if pos >= stop then V.short(pos, "a value") end
    local code = byte(buf, pos + 1)
    local size = FIXED[code]
    if size > 0 then
        if pos + size > stop then V.short(pos, "value " .. code_text(code)) end
        return pos + size
    end
    return COMPLEX[code](buf, pos, stop, ctx, depth)
end

local function skip_string(buf, pos, stop)
    local _, after = string_at(buf, pos, stop)
    return after
end

local function skip_binary(buf, pos, stop)
    local code = byte(buf, pos + 1)
    while true do
        local start, final = pos, true
        if code >= 0x20 and code <= 0x2F then
            pos = pos + 1 + code - 0x20
        elseif code >= 0x34 and code <= 0x37 then
            if pos + 2 > stop then V.short(pos, "binary length") end
            pos = pos + 2 + (code - 0x34) * 256 + byte(buf, pos + 2)
        elseif code == 0x42 or code == 0x41 then -- 'B' final chunk, 'A' chunk followed by more
            if pos + 3 > stop then V.short(pos, "binary length") end
            pos = pos + 3 + byte(buf, pos + 2) * 256 + byte(buf, pos + 3)
            final = code == 0x42
        else
            V.fail(pos, "expected a binary chunk, found code " .. code_text(code))
        end
        if pos > stop then V.short(start, "binary") end
        if final then return pos end
        if pos >= stop then V.short(pos, "binary chunk") end -- (its rest is still to come)
        code = byte(buf, pos + 1)
    end
end

-- Read the class definition at ``pos`` ('C' name count field-name*) into ``ctx``.
local function class_def(buf, pos, stop, ctx)
    local name, p = string_at(buf, pos + 1, stop)
    local count, q = int_at(buf, p, stop, false)
    if count < 0 then
        V.fail(p, format("bad field count %d in class definition %s", count, quoted(name)))
    end
    if count > stop - q then -- every field name takes a byte at least
        V.short(p, format("class definition %s of %d fields", quoted(name), count))
    end
    for _ = 1, count do
        local _
        _, q = string_at(buf, q, stop)
    end
    ctx.classes[#ctx.classes + 1] = { name = name, fields = count }
    return q
end

local function skip_class_def(buf, pos, stop, ctx, depth)
    -- a definition precedes the value using it; loop (not recurse) over a run of them
    while true do
        pos = class_def(buf, pos, stop, ctx)
        if pos >= stop then V.short(pos, "a value after a class definition") end
        if byte(buf, pos + 1) ~= 0x43 then return skip(buf, pos, stop, ctx, depth) end
    end
end

local function is_string_code(code)
    return code < 0x20 or (code >= 0x30 and code <= 0x33) or code == 0x52 or code == 0x53
end

-- The type of a typed list or map: a new type name, or the index of an earlier one.
local function type_at(buf, pos, stop, ctx)
    if pos >= stop then V.short(pos, "a type") end
    if is_string_code(byte(buf, pos + 1)) then
        local name, p = string_at(buf, pos, stop)
        ctx.types[#ctx.types + 1] = name
        return name, p
    end
    local ref, after = int_at(buf, pos, stop, false)
    if ref < 0 or ref >= #ctx.types then
        V.fail(pos, format("type reference %d to an unknown type", ref))
    end
    return ctx.types[ref + 1], after
end

local function deeper(pos, depth)
    if depth >= MAX_DEPTH then
        V.fail(pos, format("values nested deeper than %d levels", MAX_DEPTH))
    end
    return depth + 1
end

local function skip_list(buf, pos, stop, ctx, depth)
    local code = byte(buf, pos + 1)
    local inner = deeper(pos, depth)
    local p = pos + 1
    if code == 0x55 or code == 0x56 or (code >= 0x70 and code <= 0x77) then
        local _
        _, p = type_at(buf, p, stop, ctx)
    end
    if code == 0x55 or code == 0x57 then -- variable length, ends with 'Z'
        while true do
            if p >= stop then V.short(p, "a list without its end ('Z')") end
            if byte(buf, p + 1) == 0x5A then return p + 1 end
            p = skip(buf, p, stop, ctx, inner)
        end
    end
    local n
    if code == 0x56 or code == 0x58 then
        local q
        n, q = int_at(buf, p, stop, false)
        if n < 0 then V.fail(p, format("bad list length %d", n)) end
        if n > stop - q then V.short(p, format("a list of %d values", n)) end -- (a byte each)
        p = q
    elseif code <= 0x77 then
        n = code - 0x70
    else
        n = code - 0x78
    end
    for _ = 1, n do
        p = skip(buf, p, stop, ctx, inner)
    end
    return p
end

local function skip_map(buf, pos, stop, ctx, depth)
    local inner = deeper(pos, depth)
    local p = pos + 1
    if byte(buf, pos + 1) == 0x4D then -- 'M': typed
        local _
        _, p = type_at(buf, p, stop, ctx)
    end
    while true do
        if p >= stop then V.short(p, "a map without its end ('Z')") end
        if byte(buf, p + 1) == 0x5A then return p + 1 end
        p = skip(buf, p, stop, ctx, inner)
        p = skip(buf, p, stop, ctx, inner)
    end
end

local function skip_object(buf, pos, stop, ctx, depth)
    local code = byte(buf, pos + 1)
    local ref, p
    if code == 0x4F then -- 'O' int
        ref, p = int_at(buf, pos + 1, stop, false)
    else
        ref, p = code - 0x60, pos + 1
    end
    if ref < 0 or ref >= #ctx.classes then
        V.fail(pos, format("object of unknown class definition %d", ref))
    end
    local inner = deeper(pos, depth)
    for _ = 1, ctx.classes[ref + 1].fields do
        p = skip(buf, p, stop, ctx, inner)
    end
    return p
end

local function skip_ref(buf, pos, stop)
    local ref, p = int_at(buf, pos + 1, stop, false)
    if ref < 0 then V.fail(pos, format("negative reference %d", ref)) end
    return p
end

local function bad(buf, pos)
    local code = byte(buf, pos + 1)
    if code == 0x5A then V.fail(pos, "unexpected end of list or map ('Z')") end
    V.fail(pos, "unknown value code " .. code_text(code))
end

for c = 0, 255 do COMPLEX[c] = bad end
for c = 0x00, 0x1F do COMPLEX[c] = skip_string end
for c = 0x30, 0x33 do COMPLEX[c] = skip_string end
COMPLEX[0x52], COMPLEX[0x53] = skip_string, skip_string
for c = 0x34, 0x37 do COMPLEX[c] = skip_binary end
COMPLEX[0x41], COMPLEX[0x42] = skip_binary, skip_binary
for _, c in ipairs({ 0x55, 0x56, 0x57, 0x58 }) do COMPLEX[c] = skip_list end
for c = 0x70, 0x7F do COMPLEX[c] = skip_list end
COMPLEX[0x4F] = skip_object
for c = 0x60, 0x6F do COMPLEX[c] = skip_object end
COMPLEX[0x43] = skip_class_def
COMPLEX[0x48], COMPLEX[0x4D] = skip_map, skip_map
COMPLEX[0x51] = skip_ref

-- ---- map values ---------------------------------------------------------------------------

-- How map() reads a key or value: s string, i int/long, d double, n/t/f, else kept raw.
local SIMPLE = {}
for c = 0, 255 do SIMPLE[c] = "" end
for c = 0x00, 0x1F do SIMPLE[c] = "s" end
for c = 0x30, 0x33 do SIMPLE[c] = "s" end
SIMPLE[0x52], SIMPLE[0x53] = "s", "s"
for c = 0x80, 0xFF do SIMPLE[c] = "i" end
for c = 0x38, 0x3F do SIMPLE[c] = "i" end
SIMPLE[0x49], SIMPLE[0x4C], SIMPLE[0x59] = "i", "i", "i"
for _, c in ipairs({ 0x44, 0x5B, 0x5C, 0x5D, 0x5E, 0x5F }) do SIMPLE[c] = "d" end
SIMPLE[0x4E], SIMPLE[0x54], SIMPLE[0x46] = "n", "t", "f"

local function value_at(buf, pos, stop, ctx)
    if pos >= stop then V.short(pos, "a value") end
    local kind = SIMPLE[byte(buf, pos + 1)]
    if kind == "s" then return string_at(buf, pos, stop) end
    if kind == "i" then return int_at(buf, pos, stop, true) end
    if kind == "n" then return V.NULL, pos + 1 end
    if kind == "t" then return true, pos + 1 end
    if kind == "f" then return false, pos + 1 end
    if kind == "d" then return double_at(buf, pos, stop) end
    local after = skip(buf, pos, stop, ctx, 1)
    return V.bytes(sub(buf, pos + 1, after)), after
end

-- A map key's identity as a Python dict sees it: equal numbers are one key whatever their type
-- (True, 1 and 1.0; False, 0, 0.0 and -0.0), other keys are equal when their values are. nil
-- for NaN, which equals no key (Python keeps every NaN key apart).
local function key_identity(k)
    if type(k) == "string" then return "s" .. k end
    if k == V.NULL then return "null" end
    if type(k) == "boolean" then return k and "n1" or "n0" end
    if type(k) == "number" or V.is_big(k) then return "n" .. V.int_text(k) end
    if V.is_float(k) then
        local x = k.x
        if x ~= x then return nil end
        if x == floor(x) and x ~= math.huge and x ~= -math.huge then
            return x == 0 and "n0" or "n" .. format("%.0f", x)
        end
        return "f" .. format("%.17g", x)
    end
    return "b" .. k.s -- the bytes of a value kept raw
end

-- An entry no other key of ``m`` equals (a NaN key), added at its end. (values.lua's map
-- identifies keys by their JSON text, which one NaN shares with every other.)
local function append_entry(m, k, v)
    m.n = m.n + 1
    m.keys[m.n] = k
    m.values[m.n] = v
end

-- ``m[k] = v`` as a Python dict does it: a key equal to one already there replaces its value
-- in place, and that first key stays.
local function put(m, firsts, k, v)
    local id = key_identity(k)
    if id == nil then return append_entry(m, k, v) end
    local first = firsts[id]
    if first == nil then
        firsts[id] = k
        first = k
    end
    m:put(first, v)
end

-- ---- the field types ----------------------------------------------------------------------

-- A string, or null ('N').
local String = {}
String.__index = String

function String:read(buf, pos, stop, ctx)
    if pos < stop and byte(buf, pos + 1) == 0x4E then return V.NULL, pos + 1 end
    return string_at(buf, pos, stop)
end

-- An int or a long, in any of their forms.
local Int = {}
Int.__index = Int

function Int:read(buf, pos, stop, ctx)
    return int_at(buf, pos, stop, true)
end

-- Any one value (with the class definitions before it), kept as its bytes.
local Any = {}
Any.__index = Any

function Any:read(buf, pos, stop, ctx)
    local after = skip(buf, pos, stop, ctx or M.new_context(), 0)
    return V.bytes(sub(buf, pos + 1, after)), after
end

-- An untyped ('H') or typed ('M') map, or null ('N').
local Map = {}
Map.__index = Map

function Map:read(buf, pos, stop, ctx)
    if pos >= stop then V.short(pos, "a map") end
    ctx = ctx or M.new_context()
    local code = byte(buf, pos + 1)
    local p
    if code == 0x48 then -- 'H'
        p = pos + 1
    elseif code == 0x4D then -- 'M' type
        local _
        _, p = type_at(buf, pos + 1, stop, ctx)
    elseif code == 0x4E then
        return V.NULL, pos + 1
    else
        V.fail(pos, "expected a map, found code " .. code_text(code))
    end
    local out, firsts = V.map(), {}
    while true do
        if p >= stop then V.short(p, "a map without its end ('Z')") end
        if byte(buf, p + 1) == 0x5A then return out, p + 1 end
        local k, v
        k, p = value_at(buf, p, stop, ctx)
        v, p = value_at(buf, p, stop, ctx)
        put(out, firsts, k, v)
    end
end

local function no_arguments(class, name)
    local reader = setmetatable({}, class)
    return function(...)
        if select("#", ...) > 0 then error("hessian2." .. name .. " takes no arguments", 0) end
        return reader
    end
end

M.TYPES.string = no_arguments(String, "string")
M.TYPES.int = no_arguments(Int, "int")
M.TYPES.any = no_arguments(Any, "any")
M.TYPES.map = no_arguments(Map, "map")

-- ---- functions for spec expressions -------------------------------------------------------

local PRIMITIVE = {}
for c in string.gmatch("VZBCDSIFJ", ".") do PRIMITIVE[byte(c)] = true end
local NAME_END = { [byte(";")] = true, [byte("/")] = true, [byte("[")] = true, [byte(".")] = true }

-- Whether ``v`` is false for Python (None, False, 0, and empty text, bytes and containers).
local function falsy(v)
    if v == nil or v == V.NULL or v == false or v == 0 or v == "" then return true end
    if V.is_bytes(v) then return v.s == "" end
    if V.is_float(v) then return v.x == 0 end
    if V.is_list(v) or V.is_map(v) then return v.n == 0 end
    return false
end

-- How many arguments a Dubbo parameter descriptor declares: JVM field descriptors one after
-- another ("Ljava/lang/String;I[Ljava/lang/Object;[[J" → 4), as Dubbo's
-- ReflectUtils.DESC_PATTERN reads them; nothing (null, "") → 0.
function M.FUNCTIONS.arg_count(descriptor)
    if falsy(descriptor) then return 0 end
    if type(descriptor) ~= "string" then V.fail(0, "parameter descriptor is not a string") end
    local s, n = descriptor, #descriptor
    local count, i = 0, 1 -- (i: 1-based, the next byte)
    while i <= n do
        local start = i -- where this descriptor starts, its '['s included
        while byte(s, i) == 0x5B do i = i + 1 end -- '['
        local c = byte(s, i)
        local ok = false
        if c ~= nil and PRIMITIVE[c] then
            i, ok = i + 1, true
        elseif c == 0x4C then -- 'L' name segments separated by '/', then ';'
            i = i + 1
            while true do
                local from = i
                while i <= n and not NAME_END[byte(s, i)] do i = i + 1 end
                if i == from then break end -- an empty segment
                local d = byte(s, i)
                if d == 0x3B then -- ';'
                    i, ok = i + 1, true
                    break
                end
                if d ~= 0x2F then break end -- '/' goes on to the next segment
                i = i + 1
            end
        end
        if not ok then
            -- (counted in characters, as Python counts them: UTF-8 lead bytes)
            local _, at = gsub(sub(s, 1, start - 1), "[^\128-\191]", "")
            V.fail(0, format("malformed parameter descriptor at character %d", at))
        end
        count = count + 1
    end
    return count
end

return M
