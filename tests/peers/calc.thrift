// IDL shared by the thriftpy2 and Apache thrift peers of tests/peers.
// Apache stubs are generated from it at test time (`thrift --gen py`); thriftpy2 loads it directly.
namespace py protocx_peers_calc

struct Point {
  1: i32 x,
  2: i32 y,
  3: optional string label,
}

service Calc {
  i32 add(1: i32 a, 2: i32 b),
  string echo(1: string text),
  Point describe(1: Point p, 2: list<i32> xs, 3: map<string, i64> weights,
                 4: set<string> tags, 5: double ratio, 6: bool flag, 7: binary raw),
  oneway void log(1: string line),
  i32 fail(1: string why),
}

// A client of CalcPlus calling `sub` on a Calc server gets TApplicationException UNKNOWN_METHOD.
service CalcPlus extends Calc {
  i32 sub(1: i32 a, 2: i32 b),
}
