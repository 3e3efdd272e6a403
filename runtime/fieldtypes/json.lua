local V = ...
-- json: one JSON object in a field of a size the frame gives (json.object[header_len]), as
-- RocketMQ's remoting protocol carries its request header. The reader of
-- runtime/fieldtypes/json.py in Lua 5.2:
--   object   a JSON object filling the bytes it is given: a map
--
-- object is a window type (Python's WINDOW = True): it cannot tell where it ends, so it reads
-- one value filling buf[pos:stop], and a spec must give it a size. M.WINDOW names it.
--
-- What Python's json module accepts, this accepts, with the same values (integers of any size
-- up to 64 digits, floats as Python parses them, a key given twice keeping its first place and
-- its last value) and the errors at the same offsets: the bytes must be UTF-8 and one JSON
-- value, an object, with only whitespace around it (Python's whitespace, which is Unicode's);
-- NaN and Infinity (not JSON), numbers of more than 64 characters and nesting deeper than 64
-- are refused, and so is a "\uD800" escape that is not half of a pair (a lone surrogate: no
-- character; refused after the rest, where Python finds it, at its backslash).
--
-- Errors: always V.fail (the window is the value's whole size: more bytes cannot help).

local byte, sub, find, char, format = string.byte, string.sub, string.find, string.char,
    string.format
local floor = math.floor

local M = { TYPES = {}, FUNCTIONS = {}, WINDOW = { object = true } }

-- arrays and objects nested deeper than this are refused (RocketMQ's header nests 2 deep)
local MAX_DEPTH = 64
-- the longest number, in characters
local MAX_DIGITS = 64

function M.new_context()
    return nil
end

local decimal_value = V.int_digits -- (a number, or a big value)

local QUOTE, BACKSLASH = 0x22, 0x5C

-- JSON's whitespace, between tokens
local BLANK = { [0x20] = true, [0x09] = true, [0x0A] = true, [0x0D] = true }

-- Python's whitespace (str.isspace), around the value: ASCII's and Unicode's, in UTF-8
local SPACE_PATTERNS = { "^[\t-\r\28-\32]", "^\194[\133\160]", "^\225\154\128",
    "^\226\128[\128-\138\168\169\175]", "^\226\129\159", "^\227\128\128" }

-- The position after the Python whitespace at ``i`` (stopping at ``stop``).
local function skip_space(buf, i, stop)
    while i < stop do
        local matched = false
        for _, pattern in ipairs(SPACE_PATTERNS) do
            local _, e = find(buf, pattern, i + 1)
            if e ~= nil and e <= stop then
                i, matched = e, true
                break
            end
        end
        if not matched then return i end
    end
    return i
end

-- The offset where nesting first exceeds MAX_DEPTH in ``buf[pos:stop]`` (strings skipped), or
-- nil. (Checked first, on the bytes, as Python does.)
local function too_deep(buf, pos, stop)
    local text = sub(buf, pos + 1, stop)
    local _, opens = string.gsub(text, "[%[{]", "")
    if opens <= MAX_DEPTH then return nil end
    local depth, in_string, escaped = 0, false, false
    for i = 1, #text do
        local b = byte(text, i)
        if in_string then
            if escaped then
                escaped = false
            elseif b == BACKSLASH then
                escaped = true
            elseif b == QUOTE then
                in_string = false
            end
        elseif b == QUOTE then
            in_string = true
        elseif b == 0x5B or b == 0x7B then
            depth = depth + 1
            if depth > MAX_DEPTH then return pos + i - 1 end
        elseif b == 0x5D or b == 0x7D then
            depth = depth - 1
        end
    end
    return nil
end

local function invalid(at, message)
    V.fail(at, "invalid JSON: " .. message)
end

-- The UTF-8 bytes of code point ``c``.
local function utf8_char(c)
    if c < 0x80 then return char(c) end
    if c < 0x800 then return char(0xC0 + floor(c / 64), 0x80 + c % 64) end
    if c < 0x10000 then
        return char(0xE0 + floor(c / 4096), 0x80 + floor(c / 64) % 64, 0x80 + c % 64)
    end
    return char(0xF0 + floor(c / 262144), 0x80 + floor(c / 4096) % 64,
        0x80 + floor(c / 64) % 64, 0x80 + c % 64)
end

-- The 4 hex digits at ``i`` as a number, or nil.
local function hex4(buf, i, stop)
    if i + 4 > stop then return nil end
    local digits = sub(buf, i + 1, i + 4)
    if find(digits, "^%x%x%x%x$") == nil then return nil end
    return tonumber(digits, 16)
end

-- where the first lone surrogate escape of the value being read is, or nil
local lone

local ESCAPES = { [0x22] = '"', [0x5C] = "\\", [0x2F] = "/", [0x62] = "\b", [0x66] = "\f",
    [0x6E] = "\n", [0x72] = "\r", [0x74] = "\t" }

-- The string whose first character (after its quote) is at ``i``: text, position after.
local function scan_string(buf, i, stop)
    local begin = i - 1
    local parts = {}
    while true do
        local j = find(buf, '[%z\1-\31"\\]', i + 1)
        if j == nil or j > stop then invalid(begin, "Unterminated string starting at") end
        j = j - 1
        local c = byte(buf, j + 1)
        if c < 0x20 then invalid(j, "Invalid control character at") end
        parts[#parts + 1] = sub(buf, i + 1, j)
        if c == QUOTE then return table.concat(parts), j + 1 end
        -- a backslash at j
        if j + 1 >= stop then invalid(begin, "Unterminated string starting at") end
        local e = byte(buf, j + 2)
        if e ~= 0x75 then -- not 'u'
            local s = ESCAPES[e]
            if s == nil then invalid(j, "Invalid \\escape") end
            parts[#parts + 1] = s
            i = j + 2
        else
            local u = j + 1
            local cp = hex4(buf, u + 1, stop)
            -- (Python also wants a character after the 4 digits: the string's end, at least)
            if cp == nil or u + 5 >= stop then invalid(u, "Invalid \\uXXXX escape") end
            i = u + 5
            if cp >= 0xD800 and cp <= 0xDBFF and i + 6 < stop
                and byte(buf, i + 1) == BACKSLASH and byte(buf, i + 2) == 0x75 then
                local low = hex4(buf, i + 2, stop)
                if low == nil then invalid(i + 1, "Invalid \\uXXXX escape") end
                if low >= 0xDC00 and low <= 0xDFFF then
                    cp = 0x10000 + (cp - 0xD800) * 1024 + (low - 0xDC00)
                    i = i + 6
                end
            end
            if cp >= 0xD800 and cp <= 0xDFFF then lone = lone or j end
            parts[#parts + 1] = utf8_char(cp)
        end
    end
end

local function is_digit(b)
    return b ~= nil and b >= 0x30 and b <= 0x39
end

-- The position after the digits at ``i``.
local function skip_digits(buf, i, stop)
    while i < stop and is_digit(byte(buf, i + 1)) do i = i + 1 end
    return i
end

-- The number at ``start``: value, position after (Python's number syntax, which is JSON's:
-- a fraction or exponent without digits is not part of the number).
local function scan_number(buf, start, stop, field)
    local i = start
    local is_float = false
    if byte(buf, i + 1) == 0x2D then -- '-'
        i = i + 1
        if i >= stop then invalid(start, "Expecting value") end
    end
    local b = byte(buf, i + 1)
    if b >= 0x31 and b <= 0x39 then
        i = skip_digits(buf, i + 1, stop)
    elseif b == 0x30 then
        i = i + 1
    else
        invalid(start, "Expecting value")
    end
    if i < stop - 1 and byte(buf, i + 1) == 0x2E and is_digit(byte(buf, i + 2)) then -- '.'
        is_float = true
        i = skip_digits(buf, i + 2, stop)
    end
    b = byte(buf, i + 1)
    if i < stop - 1 and (b == 0x65 or b == 0x45) then -- 'e' or 'E'
        local e_start = i
        i = i + 1
        b = byte(buf, i + 1)
        if i < stop - 1 and (b == 0x2D or b == 0x2B) then i = i + 1 end
        i = skip_digits(buf, i, stop)
        if is_digit(byte(buf, i)) then -- (the byte before i)
            is_float = true
        else
            i = e_start -- no exponent digits: the 'e' is not part of the number
        end
    end
    local text = sub(buf, start + 1, i)
    if #text > MAX_DIGITS then invalid(field, format("a number of %d characters", #text)) end
    if is_float then return V.float(tonumber(text)), i end
    if tonumber(text) == 0 then return 0, i end -- (-0 is 0)
    local negative = byte(text, 1) == 0x2D
    return decimal_value(negative, negative and sub(text, 2) or text), i
end

local scan_value

local function skip_blank(buf, i, stop)
    while i < stop and BLANK[byte(buf, i + 1)] do i = i + 1 end
    return i
end

-- The object whose first character (after its '{') is at ``i``: a map, position after.
local function scan_object(buf, i, stop, field)
    local out = V.map()
    i = skip_blank(buf, i, stop)
    if i >= stop or byte(buf, i + 1) ~= 0x7D then
        while true do
            if i >= stop or byte(buf, i + 1) ~= QUOTE then
                invalid(i, "Expecting property name enclosed in double quotes")
            end
            local key, value
            key, i = scan_string(buf, i + 1, stop)
            i = skip_blank(buf, i, stop)
            if i >= stop or byte(buf, i + 1) ~= 0x3A then invalid(i, "Expecting ':' delimiter") end
            i = skip_blank(buf, i + 1, stop)
            value, i = scan_value(buf, i, stop, field)
            out:put(key, value)
            i = skip_blank(buf, i, stop)
            if i < stop and byte(buf, i + 1) == 0x7D then break end
            if i >= stop or byte(buf, i + 1) ~= 0x2C then invalid(i, "Expecting ',' delimiter") end
            i = skip_blank(buf, i + 1, stop)
        end
    end
    return out, i + 1
end

-- The array whose first character (after its '[') is at ``i``: a list, position after.
local function scan_array(buf, i, stop, field)
    local out = V.list()
    i = skip_blank(buf, i, stop)
    if i >= stop or byte(buf, i + 1) ~= 0x5D then
        while true do
            local value
            value, i = scan_value(buf, i, stop, field)
            out:add(value)
            i = skip_blank(buf, i, stop)
            if i < stop and byte(buf, i + 1) == 0x5D then break end
            if i >= stop or byte(buf, i + 1) ~= 0x2C then invalid(i, "Expecting ',' delimiter") end
            i = skip_blank(buf, i + 1, stop)
        end
    end
    return out, i + 1
end

-- The words Python's scanner knows, by their first byte: the value, or ``refused`` for the
-- constants JSON does not have.
local WORDS = {
    [0x6E] = { word = "null", value = V.NULL },
    [0x74] = { word = "true", value = true },
    [0x66] = { word = "false", value = false },
    [0x4E] = { word = "NaN", refused = true },
    [0x49] = { word = "Infinity", refused = true },
    [0x2D] = { word = "-Infinity", refused = true },
}

-- The value at ``i``: value, position after. ``field``: where the field starts (the offset of
-- the errors Python's hooks raise).
scan_value = function(buf, i, stop, field)
    if i >= stop then invalid(i, "Expecting value") end
    local c = byte(buf, i + 1)
    if c == QUOTE then return scan_string(buf, i + 1, stop) end
    if c == 0x7B then return scan_object(buf, i + 1, stop, field) end
    if c == 0x5B then return scan_array(buf, i + 1, stop, field) end
    local w = WORDS[c]
    if w ~= nil and i + #w.word <= stop and sub(buf, i + 1, i + #w.word) == w.word then
        if w.refused then invalid(field, w.word .. " is not JSON") end
        return w.value, i + #w.word
    end
    return scan_number(buf, i, stop, field)
end

-- A JSON object filling buf[pos:stop].
local Object = {}
Object.__index = Object

function Object:read(buf, pos, stop, ctx)
    local deep = too_deep(buf, pos, stop)
    if deep ~= nil then V.fail(deep, format("JSON nested more than %d deep", MAX_DEPTH)) end
    V.utf8(buf, pos, stop, "a JSON value")
    lone = nil
    local value, after = scan_value(buf, skip_space(buf, pos, stop), stop, pos)
    if skip_space(buf, after, stop) < stop then V.fail(after, "bytes after the JSON value") end
    if not V.is_map(value) then V.fail(pos, "expected a JSON object") end
    if lone ~= nil then V.fail(lone, "a lone surrogate escape in a JSON string (no character)") end
    return value, stop
end

local object = setmetatable({}, Object)
M.TYPES.object = function(...)
    if select("#", ...) > 0 then error("json.object takes no arguments", 0) end
    return object
end

return M
