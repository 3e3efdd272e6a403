local V = ...
-- thrift: Apache Thrift strict binary protocol (TBinaryProtocol) values. The readers of
-- runtime/fieldtypes/thrift.py in Lua 5.2, value for value and error for error:
--   string           an i32 byte length and UTF-8 text
--   struct           a whole struct (its fields and STOP), kept as its bytes
--   field(id, kind)  field ``id`` of a struct, of ``kind`` (bool, byte, i16, i32, i64, double,
--                    string, binary, struct, list, set, map): the fields with lower ids before
--                    it are skipped; when the next field has a higher id or the struct ends, it
--                    is absent (null, nothing consumed). struct, list, set and map are kept as
--                    their bytes.
--   stop             the end of a struct: skips any fields left, then its STOP byte
--
-- Errors: V.fail where the bytes cannot be the value, V.short where a value runs past ``stop``,
-- both at the offset the Python reader reports; but an overrun is short only where Python's
-- ``measure`` waits for more bytes. measure walks the same way, except that it steps over a
-- fixed-size value before its bytes have come and walks the elements of a count the bytes
-- cannot hold, so it may find what cannot be read after the point of the overrun (a container
-- nested too deep, an unknown type): that overrun is a fail.
--
-- field's read returns a third value, true when the field was found absent only because the
-- bytes end at ``stop``: were ``stop`` only where the bytes received so far end, the field might
-- still come (Python's measure waits there).

local byte, sub, format = string.byte, string.sub, string.format

local M = { TYPES = {}, FUNCTIONS = {} }

local MAX_DEPTH = 64

local STOP, BOOL, BYTE, DOUBLE, I16, I32, I64, STRING, STRUCT, MAP, SET, LIST =
    0, 2, 3, 4, 6, 8, 10, 11, 12, 13, 14, 15
local UUID = 16 -- Thrift 0.19+: 16 raw bytes; only ever skipped here

local TYPE_NAMES = { [BOOL] = "bool", [BYTE] = "byte", [DOUBLE] = "double", [I16] = "i16",
    [I32] = "i32", [I64] = "i64", [STRING] = "string", [STRUCT] = "struct", [MAP] = "map",
    [SET] = "set", [LIST] = "list", [UUID] = "uuid" }

-- Wire size of each fixed-size type (absent: variable size, or not a type).
local SIZE = { [BOOL] = 1, [BYTE] = 1, [DOUBLE] = 8, [I16] = 2, [I32] = 4, [I64] = 8, [UUID] = 16 }

local function type_name(t)
    return TYPE_NAMES[t] or format("type %d", t)
end

function M.new_context()
    return nil -- thrift values need no per-message state
end

local function i32_at(buf, pos)
    return V.int_bytes(sub(buf, pos + 1, pos + 4), "big", true)
end

local skip_struct

-- The position after one value of (valid) type ``t`` starting at ``pos``.
local function skip(buf, pos, stop, t, depth)
    local size = SIZE[t]
    if size ~= nil then
        if pos + size > stop then V.short(pos, type_name(t) .. " value") end
        return pos + size
    end
    if t == STRING then
        if pos + 4 > stop then V.short(pos, "string length") end
        local n = i32_at(buf, pos)
        if n < 0 then V.fail(pos, format("negative string length %d", n)) end
        if pos + 4 + n > stop then V.short(pos, format("string of %d bytes", n)) end
        return pos + 4 + n
    end
    if t == STRUCT then return skip_struct(buf, pos, stop, depth) end
    if depth > MAX_DEPTH then
        V.fail(pos, format("values nested deeper than %d levels", MAX_DEPTH))
    end
    if t == MAP then
        if pos + 6 > stop then V.short(pos, "map header") end
        local kt, vt = byte(buf, pos + 1, pos + 2)
        local n = i32_at(buf, pos + 2)
        if n < 0 then V.fail(pos + 2, format("negative map size %d", n)) end
        pos = pos + 6
        if n == 0 then
            -- element types of an empty container are never used; some writers put 0 there
            return pos
        end
        if TYPE_NAMES[kt] == nil then V.fail(pos - 6, format("unknown map key type %d", kt)) end
        if TYPE_NAMES[vt] == nil then V.fail(pos - 5, format("unknown map value type %d", vt)) end
        local ks, vs = SIZE[kt], SIZE[vt]
        if ks ~= nil and vs ~= nil then
            if pos + n * (ks + vs) > stop then V.short(pos, format("map of %d entries", n)) end
            return pos + n * (ks + vs)
        end
        if 2 * n > stop - pos then -- every entry takes two bytes at least
            V.short(pos, format("map of %d entries", n))
        end
        for _ = 1, n do
            pos = skip(buf, pos, stop, kt, depth + 1)
            pos = skip(buf, pos, stop, vt, depth + 1)
        end
        return pos
    end
    -- SET and LIST share their header
    if pos + 5 > stop then V.short(pos, type_name(t) .. " header") end
    local et = byte(buf, pos + 1)
    local n = i32_at(buf, pos + 1)
    if n < 0 then V.fail(pos + 1, format("negative %s size %d", type_name(t), n)) end
    pos = pos + 5
    if n == 0 then return pos end
    if TYPE_NAMES[et] == nil then
        V.fail(pos - 5, format("unknown %s element type %d", type_name(t), et))
    end
    local es = SIZE[et]
    if es ~= nil then
        if pos + n * es > stop then
            V.short(pos, format("%s of %d elements", type_name(t), n))
        end
        return pos + n * es
    end
    if n > stop - pos then -- every element takes a byte at least
        V.short(pos, format("%s of %d elements", type_name(t), n))
    end
    for _ = 1, n do
        pos = skip(buf, pos, stop, et, depth + 1)
    end
    return pos
end

-- The position after the STOP that ends the struct whose fields start at ``pos``.
skip_struct = function(buf, pos, stop, depth)
    if depth > MAX_DEPTH then
        V.fail(pos, format("structs nested deeper than %d levels", MAX_DEPTH))
    end
    while true do
        if pos >= stop then V.short(pos, "a struct without its STOP") end
        local t = byte(buf, pos + 1)
        if t == STOP then return pos + 1 end
        if TYPE_NAMES[t] == nil then V.fail(pos, format("unknown field type %d", t)) end
        if pos + 3 > stop then V.short(pos, "field header") end
        pos = skip(buf, pos + 3, stop, t, depth + 1)
    end
end

-- ---- measuring: Python's measure walk, for the kind of an overrun ---------------------------
-- The walk of Python's measure over the bytes before ``stop``: the position after the value
-- (past ``stop`` when a fixed-size value was stepped over before its bytes came), nil where it
-- waits for more bytes; V.fail where it refuses them.

local measure_struct

local function measure_value(buf, pos, stop, t, depth)
    local size = SIZE[t]
    if size ~= nil then return pos + size end
    if t == STRING then
        if pos + 4 > stop then return nil end
        local n = i32_at(buf, pos)
        if n < 0 then V.fail(pos, format("negative string length %d", n)) end
        return pos + 4 + n
    end
    if t == STRUCT then return measure_struct(buf, pos, stop, depth) end
    if depth > MAX_DEPTH then
        V.fail(pos, format("values nested deeper than %d levels", MAX_DEPTH))
    end
    local header, kt, vt, n = t == MAP and 6 or 5, nil, nil, nil
    if pos + header > stop then return nil end
    if t == MAP then
        kt, vt = byte(buf, pos + 1, pos + 2)
        n = i32_at(buf, pos + 2)
    else
        vt = byte(buf, pos + 1)
        n = i32_at(buf, pos + 1)
    end
    if n < 0 then V.fail(pos, format("negative %s size %d", type_name(t), n)) end
    if n == 0 then return pos + header end
    if (kt ~= nil and TYPE_NAMES[kt] == nil) or TYPE_NAMES[vt] == nil then
        V.fail(pos, format("unknown %s element type", type_name(t)))
    end
    pos = pos + header
    if (kt == nil or SIZE[kt] ~= nil) and SIZE[vt] ~= nil then
        return pos + n * ((kt and SIZE[kt] or 0) + SIZE[vt])
    end
    for _ = 1, n do -- (each element takes bytes that must be there: n is bounded by them)
        if kt ~= nil then
            pos = measure_value(buf, pos, stop, kt, depth + 1)
            if pos == nil then return nil end
        end
        pos = measure_value(buf, pos, stop, vt, depth + 1)
        if pos == nil then return nil end
    end
    return pos
end

measure_struct = function(buf, pos, stop, depth)
    if depth > MAX_DEPTH then
        V.fail(pos, format("structs nested deeper than %d levels", MAX_DEPTH))
    end
    while true do
        if pos >= stop then return nil end
        local t = byte(buf, pos + 1)
        if t == STOP then return pos + 1 end
        if TYPE_NAMES[t] == nil then V.fail(pos, format("unknown field type %d", t)) end
        pos = measure_value(buf, pos + 3, stop, t, depth + 1)
        if pos == nil then return nil end
    end
end

-- ``read(...)``, but an overrun that ``walk(...)`` (the reader's measure) refuses is a fail:
-- at the offset read found, for the reason the walk found.
local function measured(read, walk, ...)
    local ok, value, after, open = pcall(read, ...)
    if ok then return value, after, open end
    if type(value) == "table" and value.short then
        local walked, e = pcall(walk, ...)
        if not walked and type(e) == "table" and e.fail then V.fail(value.offset, e.reason) end
    end
    error(value, 0)
end

-- ---- values of field(): kind → {wire type, reader(buf, pos, stop) → value, position} --------

local function read_bool(buf, pos, stop)
    if pos >= stop then V.short(pos, "bool") end
    -- C++ and Python read any non-zero byte as true (Java and Go: only 1); writers send 0/1
    return byte(buf, pos + 1) ~= 0, pos + 1
end

local function fixed(name, size)
    return function(buf, pos, stop)
        if pos + size > stop then V.short(pos, name) end
        return V.int_bytes(sub(buf, pos + 1, pos + size), "big", true), pos + size
    end
end

local function read_double(buf, pos, stop)
    if pos + 8 > stop then V.short(pos, "double") end
    return V.float(V.float_bytes(sub(buf, pos + 1, pos + 8), "big")), pos + 8
end

-- The start and end of the ``what`` (binary or string) at ``pos``: an i32 length, its bytes.
local function sized(buf, pos, stop, what)
    if pos + 4 > stop then V.short(pos, what .. " length") end
    local n = i32_at(buf, pos)
    if n < 0 then V.fail(pos, format("negative %s length %d", what, n)) end
    if pos + 4 + n > stop then V.short(pos, format("%s of %d bytes", what, n)) end
    return pos + 4, pos + 4 + n
end

local function read_binary(buf, pos, stop)
    local start, after = sized(buf, pos, stop, "binary")
    return V.bytes(sub(buf, start + 1, after)), after
end

local function read_string(buf, pos, stop)
    local start, after = sized(buf, pos, stop, "string")
    return V.utf8(buf, start, after, "a string"), after
end

local function raw(t)
    return function(buf, pos, stop)
        local after = skip(buf, pos, stop, t, 1)
        return V.bytes(sub(buf, pos + 1, after)), after
    end
end

local KIND_NAMES = { "bool", "byte", "i16", "i32", "i64", "double", "string", "binary", "struct",
    "list", "set", "map" }
local KINDS = {
    bool = { BOOL, read_bool },
    byte = { BYTE, fixed("byte", 1) },
    i16 = { I16, fixed("i16", 2) },
    i32 = { I32, fixed("i32", 4) },
    i64 = { I64, fixed("i64", 8) },
    double = { DOUBLE, read_double },
    string = { STRING, read_string },
    binary = { STRING, read_binary },
    struct = { STRUCT, raw(STRUCT) },
    list = { LIST, raw(LIST) },
    set = { SET, raw(SET) },
    map = { MAP, raw(MAP) },
}

-- ---- the field types ----------------------------------------------------------------------

-- A string: i32 byte length + UTF-8.
local String = {}
String.__index = String

local function measure_string(buf, pos, stop)
    return measure_value(buf, pos, stop, STRING, 0)
end

function String:read(buf, pos, stop, ctx)
    return measured(read_string, measure_string, buf, pos, stop)
end

-- A whole struct (its fields and STOP), kept as its bytes.
local Struct = {}
Struct.__index = Struct

local function read_struct(buf, pos, stop)
    local after = skip_struct(buf, pos, stop, 0)
    return V.bytes(sub(buf, pos + 1, after)), after
end

local function measure_struct0(buf, pos, stop)
    return measure_struct(buf, pos, stop, 0)
end

function Struct:read(buf, pos, stop, ctx)
    return measured(read_struct, measure_struct0, buf, pos, stop)
end

-- The end of a struct: skips any fields left, then consumes the STOP byte.
local Stop = {}
Stop.__index = Stop

local function read_stop(buf, pos, stop)
    return V.NULL, skip_struct(buf, pos, stop, 0)
end

function Stop:read(buf, pos, stop, ctx)
    return measured(read_stop, measure_struct0, buf, pos, stop)
end

-- Field ``id`` of a struct, of ``kind``.
local Field = {}
Field.__index = Field

-- What the field header at ``pos`` (its type ``t``, and unless STOP its id, are there) says:
-- "absent" (the struct ended, or a higher id came), "here", or "skip" another field.
local function says(self, buf, pos, t)
    if t == STOP then return "absent" end
    local id = V.int_bytes(sub(buf, pos + 2, pos + 3), "big", true)
    if id > self.id then return "absent" end
    if id == self.id then
        if t ~= self.wire then
            V.fail(pos, format("field %d is %s on the wire, expected %s", self.id, type_name(t),
                self.kind))
        end
        return "here"
    end
    if TYPE_NAMES[t] == nil then V.fail(pos, format("unknown field type %d", t)) end
    return "skip"
end

local function read_field(self, buf, pos, stop)
    while pos < stop do
        local t = byte(buf, pos + 1)
        if t ~= STOP and pos + 3 > stop then V.short(pos, "field header") end
        local step = says(self, buf, pos, t)
        if step == "absent" then return V.NULL, pos end
        if step == "here" then return self.read_value(buf, pos + 3, stop) end
        pos = skip(buf, pos + 3, stop, t, 1)
    end
    return V.NULL, pos, true
end

local function measure_field(self, buf, pos, stop)
    while true do -- read's walk, waiting for each header
        if pos >= stop then return nil end
        local t = byte(buf, pos + 1)
        if t ~= STOP and pos + 3 > stop then return nil end
        local step = says(self, buf, pos, t)
        if step == "absent" then return pos end
        pos = measure_value(buf, pos + 3, stop, t, 1)
        if step == "here" or pos == nil then return pos end
    end
end

function Field:read(buf, pos, stop, ctx)
    return measured(read_field, measure_field, self, buf, pos, stop)
end

local function no_arguments(class, name)
    local reader = setmetatable({}, class)
    return function(...)
        if select("#", ...) > 0 then error("thrift." .. name .. " takes no arguments", 0) end
        return reader
    end
end

M.TYPES.string = no_arguments(String, "string")
M.TYPES.struct = no_arguments(Struct, "struct")
M.TYPES.stop = no_arguments(Stop, "stop")

M.TYPES.field = function(id, kind)
    local k = KINDS[kind]
    if k == nil then
        error(format("thrift.field: unknown kind %q (have: %s)", tostring(kind),
            table.concat(KIND_NAMES, ", ")), 0)
    end
    if type(id) ~= "number" or id ~= math.floor(id) or id < -32768 or id > 32767 then
        error(format("thrift.field: id %s does not fit in an i16", tostring(id)), 0)
    end
    return setmetatable({ id = id, kind = kind, wire = k[1], read_value = k[2] }, Field)
end

return M
