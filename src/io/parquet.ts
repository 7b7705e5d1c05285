/**
 * Writing kpig's output tables (scores, predictions) as Parquet, through hyparquet-writer: the
 * Arrow schema's flat columns (strings, floats, ints, booleans) and lists of strings, and its
 * metadata as Parquet key-value metadata. Row groups are written as chunks come, into a temporary
 * sibling that is renamed over the destination at the end (an interrupted write leaves no file).
 */
import { rename, rm } from 'node:fs/promises';
import { type Schema, type Table, Type, type Vector } from 'apache-arrow';
import { ParquetWriter, fileWriter, type ColumnSource, type SchemaElement } from 'hyparquet-writer';
import { KpigIOError } from '../errors/index.js';
import { tempSiblingPath } from './atomic.js';

/** The Parquet schema element(s) of one Arrow field. */
function elements(name: string, type: Schema['fields'][number]['type'], nullable: boolean): SchemaElement[] {
  const rep = nullable ? 'OPTIONAL' : 'REQUIRED';
  switch (type.typeId) {
    case Type.Utf8:
      return [{ name, type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: rep }];
    case Type.Float:
      return [{ name, type: (type as unknown as { precision: number }).precision === 2 ? 'DOUBLE' : 'FLOAT', repetition_type: rep }];
    case Type.Int:
      return [{ name, type: (type as unknown as { bitWidth: number }).bitWidth > 32 ? 'INT64' : 'INT32', repetition_type: rep }];
    case Type.Bool:
      return [{ name, type: 'BOOLEAN', repetition_type: rep }];
    case Type.List: {
      const child = (type as unknown as { children: { type: { typeId: Type } }[] }).children[0];
      if (child.type.typeId !== Type.Utf8) break;
      return [
        { name, repetition_type: rep, converted_type: 'LIST', num_children: 1 },
        { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
        { name: 'element', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'REQUIRED' },
      ];
    }
    default:
  }
  throw new KpigIOError(`Parquet output: column '${name}' has Arrow type ${String(type)}, which kpig does not write as Parquet`);
}

/** The Parquet schema of an Arrow schema (flat columns and lists of strings). */
function parquetSchema(schema: Schema): SchemaElement[] {
  return [{ name: 'root', num_children: schema.fields.length }, ...schema.fields.flatMap((f) => elements(f.name, f.type, f.nullable))];
}

function columnValues(v: Vector): unknown[] | ArrayLike<unknown> {
  if (v.type.typeId === Type.List) return Array.from(v, (x) => (x === null ? null : Array.from(x as Iterable<unknown>)));
  if (v.nullCount === 0 && (v.type.typeId === Type.Float || v.type.typeId === Type.Int)) return v.toArray() as ArrayLike<unknown>;
  return Array.from(v);
}

/**
 * A Parquet file written table by table (row groups of at most 100,000 rows).
 *
 * @example
 * const w = new ParquetTableWriter('scores.parquet', table.schema);
 * w.write(table);
 * await w.finish();
 */
export class ParquetTableWriter {
  readonly #temp: string;
  readonly #writer: ParquetWriter;

  constructor(
    readonly path: string,
    readonly schema: Schema,
  ) {
    this.#temp = tempSiblingPath(path);
    const kvMetadata = [...schema.metadata].map(([key, value]) => ({ key, value }));
    this.#writer = new ParquetWriter({ writer: fileWriter(this.#temp), schema: parquetSchema(schema), codec: 'SNAPPY', kvMetadata, createdBy: 'kpig' });
  }

  /** Appends the rows of `table` (by column name, in the writer's schema). */
  write(table: Table): void {
    if (table.numRows === 0) return;
    const columnData: ColumnSource[] = this.schema.fields.map((f) => {
      const v = table.getChild(f.name);
      if (!v) throw new KpigIOError(`Parquet output ${this.path}: a chunk has no column '${f.name}'`);
      return { name: f.name, data: columnValues(v) as ColumnSource['data'], nullable: f.nullable };
    });
    void this.#writer.write({ columnData, rowGroupSize: 100_000 });
  }

  /** Writes the footer and renames the file into place. */
  async finish(): Promise<void> {
    try {
      await this.#writer.finish();
      await rename(this.#temp, this.path);
    } catch (err) {
      await rm(this.#temp, { force: true });
      throw new KpigIOError(`cannot write ${this.path}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Removes the partial file (after a failure). */
  async abort(): Promise<void> {
    await rm(this.#temp, { force: true });
  }
}

/**
 * Writes `table` to `path` as one Parquet file, atomically.
 *
 * @example
 * await writeParquetTable('eval.parquet', predictionsTable);
 */
export async function writeParquetTable(path: string, table: Table): Promise<void> {
  const w = new ParquetTableWriter(path, table.schema);
  try {
    w.write(table);
  } catch (err) {
    await w.abort();
    throw err;
  }
  await w.finish();
}
