//! `chorus ddl athena|trino|redshift`: the archive as an external table of
//! the engines that read its Parquet files where they are (the reference's
//! Glue + Athena, and Trino's and Redshift Spectrum's equivalents), without
//! loading anything.
//!
//! The archive's layout is the contract: `posts/dt=YYYY-MM-DD/hour=HH/*.parquet`
//! under its root, the Parquet columns of [`crate::record::batch::schema`]
//! in order, `dt` and `hour` only in the object keys. Each engine gets the
//! columns with the types it reads those Parquet columns as, and the two
//! partition columns:
//!
//! * Athena: partition projection on `dt` (a date, `yyyy-MM-dd`) and `hour`
//!   (two digits), so new hours are found without a crawler or
//!   `MSCK REPAIR`;
//! * Trino (Hive connector): `external_location` and `partitioned_by`, and
//!   the call that registers the partitions present;
//! * Redshift Spectrum: an external schema on the Glue catalog, the external
//!   table, and a partition per hour the archive holds (Spectrum does not
//!   project partitions).
//!
//! A post re-sent is in the archive once per version: `posts` here is every
//! version, as chorus's own `posts` table is; the newest per (platform, id)
//! is chorus's `posts_latest`, whose SQL each DDL ends with as a view.

use std::fmt::Write as _;

use arrow::datatypes::{DataType, Schema};
use chrono::NaiveDate;

use super::WarehouseError;
use crate::record::batch::{DT, HOUR};

/// An engine that reads the archive in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Amazon Athena (Glue catalog, Hive DDL).
    Athena,
    /// Trino's Hive connector.
    Trino,
    /// Amazon Redshift Spectrum.
    Spectrum,
}

/// The table every engine gets.
pub const TABLE: &str = "posts";

/// The type `engine` reads an archive column of `data_type` as.
pub fn column_type(engine: Engine, data_type: &DataType) -> Option<&'static str> {
    use DataType as D;
    Some(match (engine, data_type) {
        (Engine::Athena, D::Utf8) => "string",
        (Engine::Trino, D::Utf8) => "varchar",
        (Engine::Spectrum, D::Utf8) => "varchar(65535)",
        (_, D::Int64) => "bigint",
        (Engine::Spectrum, D::Float64) => "double precision",
        (_, D::Float64) => "double",
        // Parquet INT64 microseconds adjusted to UTC: each engine's
        // timestamp without a zone reads it as the UTC instant (Trino's
        // Hive tables have no zoned timestamps).
        (Engine::Trino, D::Timestamp(_, _)) => "timestamp(6)",
        (_, D::Timestamp(_, _)) => "timestamp",
        _ => return None,
    })
}

/// The types of the partition columns `dt` and `hour`.
fn partition_types(engine: Engine) -> [(&'static str, &'static str); 2] {
    match engine {
        // As Athena's date-projection examples declare it: compared with
        // '2026-12-07', not DATE '2026-12-07'.
        Engine::Athena => [(DT, "string"), (HOUR, "int")],
        Engine::Trino => [(DT, "date"), (HOUR, "integer")],
        Engine::Spectrum => [(DT, "date"), (HOUR, "int")],
    }
}

/// The column lines of `schema` for `engine` (`name type`, quoted as the
/// engine quotes identifiers).
fn columns(engine: Engine, schema: &Schema) -> Result<Vec<String>, WarehouseError> {
    schema
        .fields()
        .iter()
        .map(|f| {
            let ty = column_type(engine, f.data_type()).ok_or_else(|| {
                WarehouseError::Data(format!(
                    "archive column {:?} has type {}, which {engine:?} has no type for",
                    f.name(),
                    f.data_type()
                ))
            })?;
            Ok(format!("{} {ty}", quote_ident(engine, f.name())))
        })
        .collect()
}

/// `name` quoted: backticks for Athena's Hive DDL, double quotes else.
fn quote_ident(engine: Engine, name: &str) -> String {
    match engine {
        Engine::Athena => format!("`{}`", name.replace('`', "``")),
        Engine::Trino | Engine::Spectrum => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// `text` as a single-quoted SQL string.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The SQL of `posts_latest` over `posts` (qualified): per (platform, id)
/// the version with the newest `ingested_at`.
fn latest_view(posts: &str, view: &str) -> String {
    format!(
        "CREATE OR REPLACE VIEW {view} AS\nSELECT * FROM (\n    SELECT *, row_number() OVER (PARTITION BY platform, id ORDER BY ingested_at DESC) AS version_rank\n    FROM {posts}\n) AS versions WHERE version_rank = 1"
    )
}

/// The DDL of `engine` over the archive at `archive` (its root URL,
/// `s3://bucket/prefix`), in `schema` (Athena: the Glue database; Trino:
/// `catalog.schema`; Spectrum: the external schema, on Glue database
/// `database` read with `iam_role`). `hours` are the archive's hour
/// partitions, which Spectrum is told of one by one.
pub fn ddl(
    engine: Engine,
    archive_schema: &Schema,
    (schema, archive): (&str, &str),
    spectrum: Option<(&str, &str)>,
    hours: &[(NaiveDate, u32)],
) -> Result<String, WarehouseError> {
    let posts_dir = format!(
        "{}/{}/",
        archive.trim_end_matches('/'),
        crate::sinks::archive::POSTS_DIR
    );
    let mut lines = columns(engine, archive_schema)?;
    let partitions: Vec<String> = partition_types(engine)
        .iter()
        .map(|(name, ty)| format!("{} {ty}", quote_ident(engine, name)))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "-- chorus: the archive at {archive} as a table of {engine:?}, read in place.\n\
         -- Columns: the archive's Parquet columns in order; dt and hour come from the object keys\n\
         -- (posts/dt=YYYY-MM-DD/hour=HH/). posts holds every version of a re-sent post;\n\
         -- posts_latest the newest per (platform, id), as in chorus.\n"
    );
    match engine {
        Engine::Athena => {
            let db = quote_ident(engine, schema);
            let table = format!("{db}.{}", quote_ident(engine, TABLE));
            let _ = writeln!(out, "CREATE DATABASE IF NOT EXISTS {db};\n");
            let _ = writeln!(
                out,
                "CREATE EXTERNAL TABLE IF NOT EXISTS {table} (\n    {}\n)\nPARTITIONED BY (\n    {}\n)\n\
                 STORED AS PARQUET\nLOCATION {}\nTBLPROPERTIES (\n    'projection.enabled' = 'true',\n    \
                 'projection.dt.type' = 'date',\n    'projection.dt.format' = 'yyyy-MM-dd',\n    \
                 'projection.dt.range' = '2000-01-01,NOW',\n    'projection.dt.interval' = '1',\n    \
                 'projection.dt.interval.unit' = 'DAYS',\n    'projection.hour.type' = 'integer',\n    \
                 'projection.hour.range' = '0,23',\n    'projection.hour.digits' = '2',\n    \
                 'storage.location.template' = {}\n);\n",
                lines.join(",\n    "),
                partitions.join(",\n    "),
                quote(&posts_dir),
                quote(&format!("{posts_dir}dt=${{dt}}/hour=${{hour}}/")),
            );
            // Athena views are written in its (Trino) SQL: double quotes.
            let _ = writeln!(
                out,
                "{};",
                latest_view(
                    &format!("\"{schema}\".\"{TABLE}\""),
                    &format!("\"{schema}\".\"posts_latest\"")
                )
            );
        }
        Engine::Trino => {
            let (catalog, db) = schema.split_once('.').unwrap_or(("hive", schema));
            let qualified = format!("{}.{}", quote_ident(engine, catalog), quote_ident(engine, db));
            let table = format!("{qualified}.{}", quote_ident(engine, TABLE));
            lines.extend(partitions);
            let _ = writeln!(
                out,
                "CREATE SCHEMA IF NOT EXISTS {qualified};\n\nCREATE TABLE IF NOT EXISTS {table} (\n    {}\n)\nWITH (\n    \
                 external_location = {},\n    format = 'PARQUET',\n    partitioned_by = ARRAY['{DT}', '{HOUR}']\n);\n\n\
                 -- The hours present now; run again (or set hive.partition-projection) as the archive grows.\n\
                 CALL {}.system.sync_partition_metadata({}, {}, 'ADD');\n",
                lines.join(",\n    "),
                quote(&posts_dir),
                quote_ident(engine, catalog),
                quote(db),
                quote(TABLE),
            );
            let _ = writeln!(
                out,
                "{};",
                latest_view(&table, &format!("{qualified}.\"posts_latest\""))
            );
        }
        Engine::Spectrum => {
            let (database, iam_role) = spectrum.unwrap_or(("chorus", "arn:aws:iam::<account>:role/<role>"));
            let external = quote_ident(engine, schema);
            let table = format!("{external}.{}", quote_ident(engine, TABLE));
            let _ = writeln!(
                out,
                "CREATE EXTERNAL SCHEMA IF NOT EXISTS {external}\nFROM DATA CATALOG DATABASE {}\nIAM_ROLE {}\n\
                 CREATE EXTERNAL DATABASE IF NOT EXISTS;\n\nCREATE EXTERNAL TABLE {table} (\n    {}\n)\n\
                 PARTITIONED BY (\n    {}\n)\nSTORED AS PARQUET\nLOCATION {};\n",
                quote(database),
                quote(iam_role),
                lines.join(",\n    "),
                partitions.join(",\n    "),
                quote(&posts_dir),
            );
            let _ = writeln!(
                out,
                "-- One partition per hour the archive holds ({}); run chorus ddl redshift again as it grows.",
                hours.len()
            );
            for (dt, hour) in hours {
                let _ = writeln!(
                    out,
                    "ALTER TABLE {table} ADD IF NOT EXISTS PARTITION ({DT} = {}, {HOUR} = {hour}) LOCATION {};",
                    quote(&dt.to_string()),
                    quote(&format!("{posts_dir}dt={dt}/hour={hour:02}/")),
                );
            }
            // Redshift views over external tables must be late-binding.
            let _ = writeln!(
                out,
                "\n{}\nWITH NO SCHEMA BINDING;",
                latest_view(&table, "\"posts_latest_spectrum\"")
            );
        }
    }
    Ok(out)
}

/// The hour partitions under an archive directory's `posts/`, sorted
/// (none when it cannot be read).
pub fn hours_under(root: &std::path::Path) -> Vec<(NaiveDate, u32)> {
    crate::sinks::archive::compact::hour_partitions(root)
        .map(|hours| hours.into_iter().map(|(dt, hour, _)| (dt, hour)).collect())
        .unwrap_or_default()
}

/// The column list (name, type) of a `CREATE … TABLE` statement in `ddl`
/// of `engine`: what a test compares with the archive's Parquet schema.
pub fn parse_columns(engine: Engine, ddl: &str) -> Vec<(String, String)> {
    let start = match engine {
        Engine::Athena => "CREATE EXTERNAL TABLE",
        Engine::Trino => "CREATE TABLE",
        Engine::Spectrum => "CREATE EXTERNAL TABLE",
    };
    let mut out = Vec::new();
    let Some(at) = ddl.find(start) else {
        return out;
    };
    // The table's columns, then (Athena, Spectrum) PARTITIONED BY's.
    let mut lists = 0;
    let mut inside = false;
    for line in ddl[at..].lines() {
        let trimmed = line.trim();
        if trimmed.ends_with('(') && (trimmed.starts_with("CREATE") || trimmed.starts_with("PARTITIONED BY")) {
            inside = true;
            lists += 1;
            continue;
        }
        if inside && trimmed.starts_with(')') {
            inside = false;
            if engine == Engine::Trino || lists == 2 {
                break;
            }
            continue;
        }
        if inside && let Some((name, ty)) = trimmed.trim_end_matches(',').split_once(' ') {
            let name = name.trim_matches(|c| c == '`' || c == '"');
            out.push((name.to_string(), ty.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours() -> Vec<(NaiveDate, u32)> {
        vec![(NaiveDate::from_ymd_opt(2019, 1, 1).unwrap(), 3)]
    }

    #[test]
    fn each_engine_gets_the_archive_columns_in_order_then_dt_and_hour() {
        let schema = crate::record::batch::schema();
        for engine in [Engine::Athena, Engine::Trino, Engine::Spectrum] {
            let sql = ddl(engine, &schema, ("chorus", "s3://b/p/"), None, &hours()).unwrap();
            let columns = parse_columns(engine, &sql);
            let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
            let mut expected: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            expected.extend([DT, HOUR]);
            assert_eq!(names, expected, "{engine:?}\n{sql}");
            for (field, (_, ty)) in schema.fields().iter().zip(&columns) {
                assert_eq!(
                    Some(ty.as_str()),
                    column_type(engine, field.data_type()),
                    "{engine:?} {field}"
                );
            }
            assert!(sql.contains("'s3://b/p/posts/'"), "{sql}");
        }
    }

    #[test]
    fn athena_projects_dt_and_hour_onto_the_archive_keys() {
        let sql = ddl(
            Engine::Athena,
            &crate::record::batch::schema(),
            ("chorus", "s3://b/p"),
            None,
            &[],
        )
        .unwrap();
        for property in [
            "'projection.enabled' = 'true'",
            "'projection.dt.format' = 'yyyy-MM-dd'",
            "'projection.hour.digits' = '2'",
            "'storage.location.template' = 's3://b/p/posts/dt=${dt}/hour=${hour}/'",
        ] {
            assert!(sql.contains(property), "{property}\n{sql}");
        }
    }

    #[test]
    fn spectrum_adds_each_hour_with_its_location_and_quotes_what_it_is_given() {
        let sql = ddl(
            Engine::Spectrum,
            &crate::record::batch::schema(),
            ("spectrum", "s3://b/p"),
            Some(("glue_db", "arn:aws:iam::1:role/it's")),
            &hours(),
        )
        .unwrap();
        assert!(
            sql.contains(
                "ADD IF NOT EXISTS PARTITION (dt = '2019-01-01', hour = 3) LOCATION 's3://b/p/posts/dt=2019-01-01/hour=03/'"
            ),
            "{sql}"
        );
        assert!(sql.contains("IAM_ROLE 'arn:aws:iam::1:role/it''s'"), "{sql}");
        assert!(sql.contains("DATABASE 'glue_db'"), "{sql}");
    }

    #[test]
    fn trino_names_its_catalog_or_hive() {
        let schema = crate::record::batch::schema();
        let sql = ddl(Engine::Trino, &schema, ("lake.chorus", "s3://b/p"), None, &[]).unwrap();
        assert!(
            sql.contains("CREATE TABLE IF NOT EXISTS \"lake\".\"chorus\".\"posts\""),
            "{sql}"
        );
        assert!(
            sql.contains("CALL \"lake\".system.sync_partition_metadata('chorus', 'posts', 'ADD')"),
            "{sql}"
        );
        let sql = ddl(Engine::Trino, &schema, ("chorus", "s3://b/p"), None, &[]).unwrap();
        assert!(sql.contains("\"hive\".\"chorus\".\"posts\""), "{sql}");
    }
}
