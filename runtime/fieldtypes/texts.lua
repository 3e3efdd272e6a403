local V = ...
-- texts: values that end at a delimiter, ASCII decimal integers and literal tokens (Redis
-- RESP's $5\r\nhello\r\n, memcached's text commands, HTTP/1 lines). The readers of
-- runtime/fieldtypes/texts.py in Lua 5.2:
--   bytes(delimiter)    the bytes up to the delimiter (which follows them and is consumed)
--   string(delimiter)   the same as UTF-8 text
--   decimal(delimiter)  a canonical ASCII decimal integer: an optional "-" and digits without
--                       leading zeros, at most 20 characters, then the delimiter
--   token(token)        the literal bytes of ``token``: null
-- Specs spell them bytes[until "\r\n"], string[until "\r\n"], decimal[until "\r\n"] and a
-- literal token (crlf "\r\n").
--
-- A delimiter or token is given as the spec's text, whose characters are bytes 0-255: the
-- argument is that text in UTF-8 (as the dissector's SPEC holds strings), so "\xff" arrives as
-- the two bytes of U+00FF and stands for the byte 0xFF.
--
-- Errors: V.short exactly where Python's ``measure`` waits for more bytes (no delimiter yet, a
-- token not all there), V.fail where it refuses them (a decimal at its first byte that cannot
-- be part of one), both at the offset Python's read reports (the value's start).

local byte, sub, find, char, format = string.byte, string.sub, string.find, string.char,
    string.format

local M = { TYPES = {}, FUNCTIONS = {} }

-- ``s`` quoted on one line for a message: printable ASCII as it is, other bytes as \xNN.
local function quoted(s)
    local shown = string.gsub(s, "[^ -~]", function(c) return format("\\x%02x", byte(c)) end)
    return '"' .. shown .. '"'
end

-- "-" and 19 digits hold any 64-bit integer; longer is not a number these protocols send
local MAX_DECIMAL = 20

function M.new_context()
    return nil -- text values need no per-message state
end

local decimal_value = V.int_digits -- (a number, or a big value)

-- The bytes a spec's text stands for: each character (UTF-8 in ``text``) one byte 0-255.
local function octets(text, what)
    if type(text) ~= "string" then error(what .. " must be text", 0) end
    local out = {}
    local i = 1
    while i <= #text do
        local c = byte(text, i)
        if c < 0x80 then
            out[#out + 1] = char(c)
            i = i + 1
        elseif (c == 0xC2 or c == 0xC3) and (byte(text, i + 1) or 0) >= 0x80
            and byte(text, i + 1) < 0xC0 then -- U+0080..U+00FF
            out[#out + 1] = char((c - 0xC0) * 64 + byte(text, i + 1) - 0x80)
            i = i + 2
        else
            error(format("%s must be bytes 0-255 (\\xNN), not %s", what, quoted(text)), 0)
        end
    end
    if #out == 0 then error(what .. " must not be empty", 0) end
    return table.concat(out)
end

-- The first ``delim`` that lies whole in ``buf[pos:stop]``: its offset, or nil.
local function find_in(buf, delim, pos, stop)
    local i = find(buf, delim, pos + 1, true)
    if i == nil or i - 1 + #delim > stop then return nil end
    return i - 1
end

-- Bytes up to a delimiter.
local Bytes = {}
Bytes.__index = Bytes

function Bytes:read(buf, pos, stop, ctx)
    local i = find_in(buf, self.delim, pos, stop)
    if i == nil then V.short(pos, self.what) end
    return V.bytes(sub(buf, pos + 1, i)), i + #self.delim
end

-- UTF-8 text up to a delimiter.
local String = {}
String.__index = String

function String:read(buf, pos, stop, ctx)
    local i = find_in(buf, self.delim, pos, stop)
    if i == nil then V.short(pos, self.what) end
    return V.utf8(buf, pos, i, "text"), i + #self.delim
end

local function delimited(class)
    return function(delimiter)
        local delim = octets(delimiter, "a delimiter")
        return setmetatable({ delim = delim, what = "a value ending in " .. quoted(delim) }, class)
    end
end

M.TYPES.bytes = delimited(Bytes)
M.TYPES.string = delimited(String)

-- A signed integer in ASCII decimal digits, ended by a delimiter.
local Decimal = {}
Decimal.__index = Decimal

local function is_digit(b)
    return b ~= nil and b >= 0x30 and b <= 0x39
end

local function bad_decimal(buf, pos, stop)
    local found = sub(buf, pos + 1, math.min(stop, pos + 24))
    V.fail(pos, "expected a decimal number, found " .. quoted(found))
end

function Decimal:read(buf, pos, stop, ctx)
    local delim = self.delim
    local k = #delim
    local first = byte(delim, 1)
    -- digits (and a leading "-") up to the delimiter's first byte: a byte that can be neither
    -- is refused at once, as Python's measure refuses it
    local p = pos
    while true do
        if p >= stop then V.short(pos, "a decimal number") end
        local b = byte(buf, p + 1)
        if b == first and p > pos then break end
        if not (is_digit(b) or (b == 0x2D and p == pos)) or p - pos >= MAX_DECIMAL then
            bad_decimal(buf, pos, stop)
        end
        p = p + 1
    end
    if p + k > stop then V.short(pos, "a decimal number") end
    -- the delimiter is all there: the number ends at the first one within reach (as Python
    -- reads it), which must follow canonical digits
    local i = find_in(buf, delim, pos, math.min(stop, pos + MAX_DECIMAL + k))
    if i == nil then bad_decimal(buf, pos, stop) end
    local text = sub(buf, pos + 1, i)
    local digits = byte(text, 1) == 0x2D and sub(text, 2) or text
    local leading_zero = byte(digits, 1) == 0x30 and (#digits > 1 or digits ~= text) -- (or -0)
    if digits == "" or find(digits, "[^0-9]") or leading_zero then bad_decimal(buf, pos, stop) end
    return decimal_value(digits ~= text, digits), i + k
end

M.TYPES.decimal = function(delimiter)
    local delim = octets(delimiter, "a delimiter")
    if is_digit(byte(delim, 1)) then error("a decimal's delimiter cannot start with a digit", 0) end
    return setmetatable({ delim = delim }, Decimal)
end

-- Literal bytes: checked, null as the value.
local Token = {}
Token.__index = Token

function Token:read(buf, pos, stop, ctx)
    local k = #self.token
    if pos + k > stop then V.short(pos, quoted(self.token)) end
    if sub(buf, pos + 1, pos + k) ~= self.token then
        local found = sub(buf, pos + 1, pos + k)
        V.fail(pos, "expected " .. quoted(self.token) .. ", found " .. quoted(found))
    end
    return V.NULL, pos + k
end

M.TYPES.token = function(token)
    return setmetatable({ token = octets(token, "a token") }, Token)
end

return M
