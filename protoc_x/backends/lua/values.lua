-- protoc-x dissector values: what a frame's fields hold once read, the errors a reader raises,
-- and byte-level readers. Plain Lua 5.2 (what Wireshark embeds): no Wireshark API here, so the
-- field-type readers (runtime/fieldtypes/*.lua) and this file also run under any Lua 5.2.
--
-- A value is one of:
--   V.NULL                      null
--   a Lua string                text (UTF-8, checked when read)
--   a Lua number                an integer (or, wrapped by V.float, a float)
--   V.big(...)                  an integer beyond 2^53, which a Lua 5.2 number cannot hold
--   V.bytes(s)                  bytes (s: a Lua string of raw bytes)
--   V.float(x)                  a floating-point number
--   true / false                a boolean
--   V.list(items, n)            a list (items[1..n], each a value)
--   V.map()                     an ordered map (m:put(key, value); keys are values)
--   V.record(name)              a record's value: its fields in order (r:put(name, value))
-- V.json(value) is the value as `protoc-x decode` prints it (compact JSON, as Python's
-- json.dumps with ensure_ascii=False), and V.text(value) the same but for text, shown as it is.

local V = {}

V.NULL = setmetatable({}, { __tostring = function() return "null" end })

local Bytes = {}
Bytes.__index = Bytes
function V.bytes(s) return setmetatable({ s = s }, Bytes) end
function V.is_bytes(v) return getmetatable(v) == Bytes end

local Float = {}
Float.__index = Float
function V.float(x) return setmetatable({ x = x }, Float) end
function V.is_float(v) return getmetatable(v) == Float end

local Big = {}
Big.__index = Big
-- An integer beyond 2^53: ``digits`` its decimal digits, ``neg`` its sign, ``hex`` its 64-bit
-- two's complement (16 hex digits), for Wireshark's UInt64/Int64.
function V.is_big(v) return getmetatable(v) == Big end

local List = {}
List.__index = List
function V.list(items, n) return setmetatable({ items = items or {}, n = n or #(items or {}) }, List) end
function V.is_list(v) return getmetatable(v) == List end
function List:add(v) self.n = self.n + 1; self.items[self.n] = v end

local Map = {}
Map.__index = Map
function V.map() return setmetatable({ keys = {}, values = {}, n = 0, index = {} }, Map) end
function V.is_map(v) return getmetatable(v) == Map end
-- A key that was there is replaced in place (as a Python dict keeps its first position).
function Map:put(k, v)
    local id = V.key_id(k)
    local i = self.index[id]
    if i == nil then
        self.n = self.n + 1
        i = self.n
        self.index[id] = i
        self.keys[i] = k
    end
    self.values[i] = v
end
function Map:get(k)
    local i = self.index[V.key_id(k)]
    if i == nil then return nil end
    return self.values[i]
end

local Record = {}
Record.__index = Record
function V.record(name) return setmetatable({ name = name, fields = V.map() }, Record) end
function V.is_record(v) return getmetatable(v) == Record end
function Record:put(name, v) self.fields:put(name, v) end
function Record:get(name) return self.fields:get(name) end

-- A map key's identity: equal keys (the text "1" and the integer 1 are not) share it.
function V.key_id(k)
    if type(k) == "string" then return "s" .. k end
    if type(k) == "number" then return "n" .. V.int_text(k) end
    if V.is_big(k) then return "n" .. (k.neg and "-" or "") .. k.digits end
    return "j" .. V.json(k)
end

-- ---- integers ---------------------------------------------------------------------------

local MAX_EXACT = 9007199254740992 -- 2^53

-- Decimal digits of the non-negative integer whose big-endian bytes are ``b`` (a table).
local function digits_of(b)
    local out = {}
    local n = #b
    local nonzero = true
    while nonzero do
        local rem = 0
        nonzero = false
        for i = 1, n do
            local cur = rem * 256 + b[i]
            b[i] = math.floor(cur / 10)
            rem = cur % 10
            if b[i] ~= 0 then nonzero = true end
        end
        out[#out + 1] = string.char(48 + rem)
    end
    return string.reverse(table.concat(out))
end

-- The bytes of ``s`` (a table of numbers), most significant first.
local function big_endian(s, order)
    local b = { string.byte(s, 1, -1) }
    if order == "little" then
        local r = {}
        for i = #b, 1, -1 do r[#r + 1] = b[i] end
        b = r
    end
    return b
end

-- The integer in the bytes of ``s`` (a Lua string of 1 to 8 bytes), "big" or "little" endian,
-- signed or not: a Lua number when it is exact as one, else a big.
function V.int_bytes(s, order, signed)
    local b = big_endian(s, order)
    local neg = signed and b[1] >= 128
    local hexes = {}
    for i = 1, 8 - #b do hexes[#hexes + 1] = neg and "ff" or "00" end
    for i = 1, #b do hexes[#hexes + 1] = string.format("%02x", b[i]) end
    if neg then -- the magnitude: two's complement negated
        local carry = 1
        for i = #b, 1, -1 do
            local x = (255 - b[i]) + carry
            b[i] = x % 256
            carry = math.floor(x / 256)
        end
    end
    local m = 0 -- (exact while below 2^53; at or above it, it stays at or above it)
    for i = 1, #b do m = m * 256 + b[i] end
    if m < MAX_EXACT then return neg and -m or m end
    return setmetatable({ digits = digits_of(b), neg = neg, hex = table.concat(hexes) }, Big)
end

-- An integer written in SPEC: a number, or {"bigint", negative, "digits"} beyond 2^53.
function V.literal(x)
    if type(x) ~= "table" then return x end
    return setmetatable({ digits = x[3], neg = x[2] }, Big)
end

-- The integer of the decimal ``digits`` (no sign, no leading zeros): a number when exact as one,
-- else a big value, which has its 64-bit two's complement (V.int_bytes) when it fits in 64 bits.
function V.int_digits(negative, digits)
    local n = tonumber(digits)
    if n < MAX_EXACT then return negative and -n or n end
    local b = { 0, 0, 0, 0, 0, 0, 0, 0, 0 } -- big-endian: 64 bits, and a byte above them
    for i = 1, #digits do
        local carry = string.byte(digits, i) - 0x30
        for j = 9, 1, -1 do
            local x = b[j] * 10 + carry
            b[j], carry = x % 256, math.floor(x / 256)
        end
    end
    local over = b[1] > 0
    if negative then -- a magnitude of 2^63 at most (-2^63 is the lowest): negate it
        local low = 0
        for j = 3, 9 do low = low + b[j] end
        over = over or b[2] > 0x80 or (b[2] == 0x80 and low > 0)
        local carry = 1
        for j = 9, 2, -1 do
            local x = 255 - b[j] + carry
            b[j], carry = x % 256, math.floor(x / 256)
        end
    end
    if over then return V.literal({ "bigint", negative, digits }) end
    return V.int_bytes(string.char(table.unpack(b, 2, 9)), "big", negative)
end

-- An integer value's decimal text.
function V.int_text(x)
    if V.is_big(x) then return (x.neg and "-" or "") .. x.digits end
    return string.format("%.0f", x)
end

-- The integer value of a Lua number computed by an expression: refused beyond 2^53.
function V.check_int(x)
    if x ~= x or x >= MAX_EXACT or x <= -MAX_EXACT then
        error({ eval = true, reason = "an integer beyond 2^53, which the dissector cannot compute with" }, 0)
    end
    return x
end

-- The IEEE 754 float in the 4 or 8 bytes of ``s``, "big" or "little" endian (a Lua number).
function V.float_bytes(s, order)
    local b = big_endian(s, order)
    local sign = b[1] >= 128 and -1 or 1
    local exp, mant, bias, bits, emax
    if #b == 4 then
        exp = (b[1] % 128) * 2 + math.floor(b[2] / 128)
        mant = ((b[2] % 128) * 256 + b[3]) * 256 + b[4]
        bias, bits, emax = 127, 23, 255
    else
        exp = (b[1] % 128) * 16 + math.floor(b[2] / 16)
        mant = b[2] % 16
        for i = 3, 8 do mant = mant * 256 + b[i] end
        bias, bits, emax = 1023, 52, 2047
    end
    if exp == emax then
        if mant ~= 0 then return 0 / 0 end
        return sign * math.huge
    end
    if exp == 0 then return sign * mant * 2 ^ (1 - bias - bits) end
    return sign * (1 + mant / 2 ^ bits) * 2 ^ (exp - bias)
end

-- ---- floats, as Python's repr writes them -----------------------------------------------

-- The decimal digits ``d`` one unit above (by = 1) or below (by = -1) in the last digit, as
-- text (17 digits are beyond what a Lua number holds exactly).
local function step_digits(d, by)
    local out, carry = {}, by
    for k = #d, 1, -1 do
        local x = string.byte(d, k) - 48 + carry
        carry = 0
        if x > 9 then x, carry = x - 10, 1 elseif x < 0 then x, carry = x + 10, -1 end
        out[k] = string.char(48 + x)
    end
    if carry ~= 0 then return "" end -- (a carry out of the first digit: another length)
    return table.concat(out)
end

-- The shortest decimal digits that read back as ``x`` (x > 0), and the exponent of the first
-- (x = d.ddd * 10^E): the correctly rounded digits of each length in turn, and their neighbours
-- in the last digit, as Python's repr finds the shortest.
local function shortest(x)
    for p = 1, 17 do
        local m, e = string.match(string.format("%." .. (p - 1) .. "e", x), "^([%d%.]+)e([-+]%d+)$")
        local digits, E = string.gsub(m, "%.", ""), tonumber(e)
        for _, c in ipairs({ digits, step_digits(digits, -1), step_digits(digits, 1) }) do
            if #c == p and string.sub(c, 1, 1) ~= "0" then
                local text = string.sub(c, 1, 1) .. "." .. string.sub(c, 2) .. "e" .. E
                if tonumber(text) == x then return c, E end
            end
        end
    end
    local m, e = string.match(string.format("%.16e", x), "^([%d%.]+)e([-+]%d+)$")
    return (string.gsub(m, "%.", "")), tonumber(e)
end

local function float_text(x)
    if x ~= x then return "NaN" end
    if x == math.huge then return "Infinity" end
    if x == -math.huge then return "-Infinity" end
    local sign = (x < 0 or (x == 0 and 1 / x < 0)) and "-" or ""
    if x == 0 then return sign .. "0.0" end
    local digits, E = shortest(math.abs(x))
    digits = string.gsub(digits, "0+$", "")
    if E >= -4 and E < 16 then -- Python's repr: positional notation in this range
        local int, frac
        if E >= 0 then
            int = string.sub(digits, 1, E + 1)
            int = int .. string.rep("0", E + 1 - #int)
            frac = string.sub(digits, E + 2)
        else
            int, frac = "0", string.rep("0", -E - 1) .. digits
        end
        if frac == "" then frac = "0" end
        return sign .. int .. "." .. frac
    end
    local mant = string.sub(digits, 1, 1)
    if #digits > 1 then mant = mant .. "." .. string.sub(digits, 2) end
    return sign .. mant .. "e" .. (E < 0 and "-" or "+") .. string.format("%02d", math.abs(E))
end

-- ---- JSON, as `protoc-x decode` writes values ---------------------------------------------

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
    ["\r"] = "\\r", ["\t"] = "\\t" }

local function json_string(s)
    return '"' .. string.gsub(s, '[%c"\\]', function(c)
        return ESCAPES[c] or (string.byte(c) < 32 and string.format("\\u%04x", string.byte(c))) or c
    end) .. '"'
end

local function hex(s)
    return (string.gsub(s, ".", function(c) return string.format("%02x", string.byte(c)) end))
end
V.hex = hex

-- A map key as decode writes it: text as it is, other values as their JSON text.
function V.key_text(k)
    if type(k) == "string" then return k end
    if V.is_bytes(k) then return hex(k.s) end
    return V.json(k)
end

function V.json(v)
    if v == nil or v == V.NULL then return "null" end
    local t = type(v)
    if t == "string" then return json_string(v) end
    if t == "number" then return V.int_text(v) end
    if t == "boolean" then return v and "true" or "false" end
    if V.is_big(v) then return V.int_text(v) end
    if V.is_bytes(v) then return '"' .. hex(v.s) .. '"' end
    if V.is_float(v) then return float_text(v.x) end
    if V.is_list(v) then
        local parts = {}
        for i = 1, v.n do parts[i] = V.json(v.items[i]) end
        return "[" .. table.concat(parts, ",") .. "]"
    end
    local m = V.is_record(v) and v.fields or v
    if V.is_map(m) then
        -- keys of the same text (1 and "1") are one JSON key: the first's place, the last value
        local parts, at = {}, {}
        for i = 1, m.n do
            local value = m.values[i]
            if not (V.is_record(v) and (value == nil or value == V.NULL)) then
                local key = json_string(V.key_text(m.keys[i]))
                local part = key .. ":" .. V.json(value)
                if at[key] then parts[at[key]] = part else
                    parts[#parts + 1] = part
                    at[key] = #parts
                end
            end
        end
        return "{" .. table.concat(parts, ",") .. "}"
    end
    error("not a value: " .. tostring(v))
end

-- A value shown in a tree item: text as it is, bytes as hex, anything else as its JSON.
function V.text(v)
    if type(v) == "string" then return v end
    if V.is_bytes(v) then return hex(v.s) end
    return V.json(v)
end

-- ---- errors -----------------------------------------------------------------------------
-- Readers raise one of two errors (Lua tables, raised with error(e, 0)):
--   V.short(pos, what): the value runs past ``stop``; if ``stop`` is only where the bytes
--     received so far end, more bytes may complete it (the dissector asks TCP for them)
--   V.fail(pos, reason): these bytes cannot be the value, whatever follows

function V.short(pos, what)
    error({ short = true, offset = pos, reason = what .. " overruns the frame" }, 0)
end

function V.fail(pos, reason)
    error({ fail = true, offset = pos, reason = reason }, 0)
end

-- ``n`` bytes at ``pos`` must lie before ``stop``.
function V.need(pos, n, stop, what)
    if pos + n > stop then V.short(pos, what or "a value") end
end

-- ---- byte-level readers (positions count from 0, as in Python) -----------------------------

function V.byte(buf, pos, stop)
    if pos >= stop then V.short(pos, "a byte") end
    return string.byte(buf, pos + 1)
end

-- The ``n``-byte integer at ``pos``.
function V.int_at(buf, pos, n, order, signed, stop, what)
    V.need(pos, n, stop, what)
    return V.int_bytes(string.sub(buf, pos + 1, pos + n), order, signed)
end

-- ``buf[start:stop]``, 0-based and half-open.
function V.sub(buf, start, stop)
    return string.sub(buf, start + 1, stop)
end

-- ``buf[start:stop]`` as text: V.fail where it is not UTF-8 (as Python's decoder refuses:
-- overlong forms, surrogates, code points beyond U+10FFFF).
function V.utf8(buf, start, stop, what)
    local i = start + 1
    while i <= stop do
        local c = string.byte(buf, i)
        local n, low, high = 0, 0x80, 0xBF
        if c < 0x80 then
            n = 0
        elseif c >= 0xC2 and c <= 0xDF then
            n = 1
        elseif c >= 0xE0 and c <= 0xEF then
            n = 2
            if c == 0xE0 then low = 0xA0 elseif c == 0xED then high = 0x9F end
        elseif c >= 0xF0 and c <= 0xF4 then
            n = 3
            if c == 0xF0 then low = 0x90 elseif c == 0xF4 then high = 0x8F end
        else
            V.fail(i - 1, "invalid UTF-8 in " .. (what or "a string field"))
        end
        for k = 1, n do
            local d = i + k <= stop and string.byte(buf, i + k) or nil
            local lo, hi = 0x80, 0xBF
            if k == 1 then lo, hi = low, high end
            if d == nil or d < lo or d > hi then
                V.fail(i - 1, "invalid UTF-8 in " .. (what or "a string field"))
            end
        end
        i = i + n + 1
    end
    return string.sub(buf, start + 1, stop)
end

return V
