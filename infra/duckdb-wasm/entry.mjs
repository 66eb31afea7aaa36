// The page needs only these: the worker-backed database, its logger and the HTTP protocol.
export { AsyncDuckDB, ConsoleLogger, DuckDBDataProtocol, LogLevel } from "@duckdb/duckdb-wasm";
