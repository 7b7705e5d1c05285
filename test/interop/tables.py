"""Tables written and read by pandas, polars and pyarrow, for kpig's readers and writers.

usage:
  python tables.py write <dir>     writes the same rows in every default and named codec; prints
                                   {"files": [{"name", "path", "expect": "ok" | "error"}]}
  python tables.py read <path>...  reads kpig's Arrow files with every library; prints per file
                                   the row count and columns each library saw
"""
import json
import os
import sys

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.ipc as ipc
import pyarrow.parquet as pq


def rows(n=30):
    out = []
    for i in range(n):
        a, b = ["yes", "no", "maybe"][i % 3], ["no", "maybe", "yes"][i % 3]
        ins = f'Answer "{a}" or "{b}".'
        s = ins.index(f'"{b}"')
        out.append({"task_id": f"t{i % 3}", "instance_id": str(i), "instruction": ins,
                    "key_spans": [{"start": 7, "end": 7 + len(a) + 2}, {"start": s, "end": s + len(b) + 2}],
                    "input": f"case {i}", "output": a})
    return out


def write(d):
    data = rows()
    df = pd.DataFrame(data)
    t = pa.Table.from_pylist(data)  # key_spans: list<struct<start: int64, end: int64>>
    ldf = pl.DataFrame(data)
    files = []

    def add(name, fn, expect="ok"):
        path = os.path.join(d, name)
        fn(path)
        files.append({"name": name, "path": path, "expect": expect})

    add("pandas-default.feather", lambda p: df.to_feather(p))  # lz4
    add("pandas-zstd.feather", lambda p: df.to_feather(p, compression="zstd"))
    add("pandas-default.parquet", lambda p: df.to_parquet(p))  # snappy
    for codec in ["gzip", "brotli", "zstd", "lz4", "none"]:
        add(f"pandas-{codec}.parquet", lambda p, c=codec: df.to_parquet(p, compression=c))
    add("polars-default.parquet", lambda p: ldf.write_parquet(p))  # zstd
    for codec in ["lz4", "gzip", "snappy", "brotli", "uncompressed"]:
        add(f"polars-{codec}.parquet", lambda p, c=codec: ldf.write_parquet(p, compression=c))
    # polars' IPC: its default (string_view, large_list for every list, as of compat level newest),
    # compressed or not, and the oldest compat level (large_string, large_list).
    flat = ldf.drop("key_spans")
    add("polars-compat-zstd.arrow", lambda p: flat.write_ipc(p, compression="zstd", compat_level=pl.CompatLevel.oldest()), "ok-nospans")
    add("polars-compat-lz4.arrow", lambda p: flat.write_ipc(p, compression="lz4", compat_level=pl.CompatLevel.oldest()), "ok-nospans")
    add("polars-default.arrow", lambda p: ldf.write_ipc(p))  # string_view + large_list, zstd
    add("polars-uncompressed.arrow", lambda p: ldf.write_ipc(p, compression="uncompressed"))
    add("polars-lz4.arrow", lambda p: ldf.write_ipc(p, compression="lz4"))
    add("polars-lists.arrow", lambda p: ldf.write_ipc(p, compat_level=pl.CompatLevel.oldest()))
    add("polars-stream.arrows", lambda p: ldf.write_ipc_stream(p))
    add("pyarrow-default.feather", lambda p: feather.write_feather(t, p))  # lz4
    add("pyarrow-zstd-stream.arrows", lambda p: stream(t, p, "zstd"))
    add("pyarrow-large-string.arrow", lambda p: feather.write_feather(t.cast(pa.schema([
        f.with_type(pa.large_string()) if f.type == pa.string() else f for f in t.schema])), p, compression="uncompressed"))
    print(json.dumps({"files": files, "rows": len(data)}))


def stream(t, p, codec):
    with pa.OSFile(p, "wb") as sink, ipc.new_stream(sink, t.schema, options=ipc.IpcWriteOptions(compression=codec)) as w:
        w.write_table(t)


def read(paths):
    import duckdb
    out = {}
    for p in paths:
        seen = {}
        if p.endswith(".parquet"):
            seen["pandas"] = len(pd.read_parquet(p))
            seen["polars"] = pl.read_parquet(p).height
            tbl = pq.read_table(p)
            seen["pyarrow"] = tbl.num_rows
            seen["duckdb"] = duckdb.sql(f"SELECT count(*) FROM read_parquet('{p}')").fetchone()[0]
            seen["metadata"] = {k.decode(): v.decode() for k, v in (tbl.schema.metadata or {}).items() if k.startswith(b"kpig.")}
            seen["types"] = {f.name: str(f.type) for f in tbl.schema}
        else:
            seen["pandas"] = len(pd.read_feather(p))
            seen["polars"] = pl.read_ipc(p).height
            with pa.memory_map(p) as f:
                seen["pyarrow"] = ipc.open_file(f).read_all().num_rows
            tbl = feather.read_table(p)
            seen["duckdb"] = duckdb.sql("SELECT count(*) FROM tbl").fetchone()[0]
        seen["columns"] = tbl.column_names
        out[p] = seen
    print(json.dumps(out))


if sys.argv[1] == "write":
    write(sys.argv[2])
else:
    read(sys.argv[2:])
