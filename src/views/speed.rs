//! The speed layer: for each view whose aggregates merge (count, sum, and
//! mean as sum and count, grouped, over `posts_latest`), the same
//! aggregates kept incrementally over the enriched posts past the view's
//! batch watermark, so that the batch version ⊕ the speed layer equals the
//! view's SQL over `posts_latest` now.
//!
//! Each post's contribution to each view (its group and its aggregate
//! inputs) is kept in the stages' state under its key, the newest
//! `ingested_at` winning as in `posts_latest`. A post that arrives adds its
//! contribution and takes back the one its key had before, whichever side
//! of the watermark that one was counted on; so a re-send replaces, never
//! adds. The changes are summed per group into epochs: an epoch begins
//! where a batch run's snapshot ends (the stage is paused while the run
//! plans, so the split is exact), and once a version with that snapshot is
//! current the epochs before it are dropped. Serving adds the epochs at or
//! past the current version's snapshot to that version's partial
//! aggregates, then computes the view's own select list over the sums.
//! Contributions, epochs and the stage's offsets are written in one log
//! transaction, so a restart (kill -9 included) resumes exactly.
//!
//! Memory: one entry per group changed since the last batch run, per view.
//! State on disk: one entry per post.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::{DFSchemaRef, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SessionContext;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{Expr, ExprFunctionExt, LogicalPlan, cast, lit};
use datafusion::physical_expr::PhysicalExpr;

use crate::log::{Entry, Log, LogError, Topic, Transaction};
use crate::record::batch::{posts_schema, to_projected_batch};
use crate::record::{PostView, Prior};
use crate::sinks::consume::{Commit, Committed, Input, Sink};
use crate::transforms::enrich::Priors;

/// The speed layer's consumer name on `posts.enriched`.
pub const CONSUMER: &str = "speed";
/// What it reads.
pub const INPUT: Input = Input {
    consumer: CONSUMER,
    topic: Topic::Enriched,
};
/// State keys: the views' fingerprint, each view's epochs and their
/// per-group sums, and why a view stopped being kept.
const FINGERPRINT_KEY: &[u8] = b"speed/fingerprint";
const EPOCHS_PREFIX: &str = "speed/epochs/";
const SUMS_PREFIX: &str = "speed/sums/";

/// The state prefix of epoch `epoch`'s sums of view `view`.
fn sums_prefix(view: &str, epoch: u32) -> String {
    format!("{SUMS_PREFIX}{view}/{epoch:010}/")
}
const BROKEN_PREFIX: &str = "speed/broken/";

/// Per group (its encoding), its running sums.
pub type Sums = rustc_hash::FxHashMap<Vec<u8>, Partial>;

/// A compiled expression.
type Expression = Arc<dyn PhysicalExpr>;

/// What an aggregate keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// `count(x)`: rows with `x` not null.
    Count,
    /// `sum(x)` of integers.
    SumInt,
    /// `sum(x)` of floats.
    SumFloat,
    /// `avg(x)`: float sum and count.
    Avg,
}

/// A view the speed layer can keep: its SQL taken apart.
pub struct Mergeable {
    /// The view.
    pub name: String,
    filter: Option<Expr>,
    groups: Vec<Expr>,
    group_types: Vec<DataType>,
    aggs: Vec<(Kind, Expr, Option<Expr>)>,
    agg_schema: DFSchemaRef,
    physical_filter: Option<Arc<dyn PhysicalExpr>>,
    physical_groups: Vec<Arc<dyn PhysicalExpr>>,
    physical_aggs: Vec<(Expression, Option<Expression>)>,
    projection: Vec<Arc<dyn PhysicalExpr>>,
    /// The view's columns.
    pub schema: SchemaRef,
    /// The columns of `posts_latest` its expressions read.
    reads: Vec<usize>,
}

impl std::fmt::Debug for Mergeable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mergeable")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Takes `sql` apart if its aggregates merge; else says why it cannot.
pub async fn analyze(name: &str, sql: &str) -> Result<Mergeable, String> {
    let ctx = SessionContext::new();
    // The functions queries use, so that the layer computes what the batch
    // run does (the bounds do not matter to the views' expressions).
    crate::query::register_functions(&ctx, usize::MAX);
    let empty = MemTable::try_new(posts_schema(), vec![vec![]]).map_err(|e| e.to_string())?;
    ctx.register_table(crate::query::POSTS_LATEST, Arc::new(empty))
        .map_err(|e| e.to_string())?;
    let plan = ctx
        .state()
        .create_logical_plan(sql)
        .await
        .map_err(|e| format!("the SQL does not plan over posts_latest alone: {e}"))?;
    let LogicalPlan::Projection(projection) = plan else {
        return Err("only SELECT … GROUP BY … (no ORDER BY, LIMIT, HAVING or subquery) merges".into());
    };
    let LogicalPlan::Aggregate(aggregate) = projection.input.as_ref() else {
        return Err("the view does not aggregate with GROUP BY".into());
    };
    let (filter, scan) = match aggregate.input.as_ref() {
        LogicalPlan::Filter(f) => (Some(f.predicate.clone()), f.input.as_ref()),
        other => (None, other),
    };
    let LogicalPlan::TableScan(scan) = scan else {
        return Err("the view reads something other than posts_latest (a join, a subquery, posts)".into());
    };
    if scan.table_name.table() != crate::query::POSTS_LATEST {
        return Err("the view reads something other than posts_latest".into());
    }
    if aggregate.group_expr.is_empty() {
        return Err("the view has no GROUP BY".into());
    }
    let input_schema = scan.projected_schema.clone();
    let state = ctx.state();
    let physical = |e: &Expr| {
        state
            .create_physical_expr(e.clone(), &input_schema)
            .map_err(|e| e.to_string())
    };
    let mut group_types = Vec::new();
    for (i, group) in aggregate.group_expr.iter().enumerate() {
        let data_type = aggregate.schema.field(i).data_type().clone();
        if !encodable(&data_type) {
            return Err(format!(
                "a GROUP BY value of type {data_type} is not kept by the speed layer"
            ));
        }
        if matches!(group, Expr::GroupingSet(_)) {
            return Err("GROUPING SETS, CUBE and ROLLUP do not merge".into());
        }
        group_types.push(data_type);
    }
    let mut aggs = Vec::new();
    for (i, expr) in aggregate.aggr_expr.iter().enumerate() {
        let inner = match expr {
            Expr::Alias(alias) => alias.expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(function) = inner else {
            return Err(format!("{expr} is not an aggregate function"));
        };
        let params = &function.params;
        if params.distinct || !params.order_by.is_empty() || params.args.len() != 1 {
            return Err(format!(
                "{expr} does not merge (DISTINCT, ORDER BY or several arguments)"
            ));
        }
        let output = aggregate.schema.field(aggregate.group_expr.len() + i).data_type();
        let kind = match (function.func.name(), output) {
            ("count", DataType::Int64) => Kind::Count,
            ("sum", DataType::Int64) => Kind::SumInt,
            ("sum", DataType::Float64) => Kind::SumFloat,
            ("avg", DataType::Float64) => Kind::Avg,
            (name, output) => {
                return Err(format!(
                    "{name} (giving {output}) does not merge with a re-sent post taken back; count, sum and avg do"
                ));
            }
        };
        aggs.push((kind, params.args[0].clone(), params.filter.as_deref().cloned()));
    }
    let physical_aggs = aggs
        .iter()
        .map(|(_, arg, filter)| Ok((physical(arg)?, filter.as_ref().map(&physical).transpose()?)))
        .collect::<Result<Vec<_>, String>>()?;
    let projection_exprs = projection
        .expr
        .iter()
        .map(|e| {
            state
                .create_physical_expr(e.clone(), &aggregate.schema)
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;
    let physical_filter = filter.as_ref().map(&physical).transpose()?;
    let physical_groups: Vec<Expression> = aggregate.group_expr.iter().map(&physical).collect::<Result<_, _>>()?;
    let mut reads = std::collections::BTreeSet::new();
    for e in physical_filter
        .iter()
        .chain(&physical_groups)
        .chain(physical_aggs.iter().flat_map(|(a, f)| std::iter::once(a).chain(f)))
    {
        reads.extend(
            datafusion::physical_expr::utils::collect_columns(e)
                .iter()
                .map(|c| c.index()),
        );
    }
    Ok(Mergeable {
        name: name.to_string(),
        reads: reads.into_iter().collect(),
        physical_filter,
        physical_groups,
        filter,
        groups: aggregate.group_expr.clone(),
        group_types,
        aggs,
        agg_schema: aggregate.schema.clone(),
        physical_aggs,
        projection: projection_exprs,
        schema: Arc::new(projection.schema.as_arrow().clone()),
    })
}

/// Whether the speed layer can store values of `data_type`.
fn encodable(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Int64
            | DataType::Int32
            | DataType::Float64
            | DataType::Boolean
            | DataType::Date32
            | DataType::Timestamp(TimeUnit::Microsecond, _)
    )
}

impl Mergeable {
    /// The partial aggregates a batch run computes for this view: the
    /// groups, then per aggregate its sum and count (or count), then the
    /// rows of each group.
    pub fn partial_plan(&self) -> Result<crate::query::Statement, String> {
        let groups = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| g.clone().alias(format!("g{i}")))
            .collect();
        let mut partials = Vec::new();
        let with_filter = |e: Expr, filter: &Option<Expr>| match filter {
            Some(f) => e.filter(f.clone()).build().map_err(|e| e.to_string()),
            None => Ok(e),
        };
        for (i, (kind, arg, filter)) in self.aggs.iter().enumerate() {
            match kind {
                Kind::Count => partials.push(with_filter(count(arg.clone()), filter)?.alias(format!("a{i}_n"))),
                Kind::SumInt | Kind::SumFloat | Kind::Avg => {
                    let summed = if *kind == Kind::Avg {
                        cast(arg.clone(), DataType::Float64)
                    } else {
                        arg.clone()
                    };
                    partials.push(with_filter(sum(summed), filter)?.alias(format!("a{i}_sum")));
                    partials.push(with_filter(count(arg.clone()), filter)?.alias(format!("a{i}_n")));
                }
            }
        }
        partials.push(count(lit(1i64)).alias("rows"));
        Ok(crate::query::Statement::Aggregate(
            self.filter.clone(),
            groups,
            partials,
        ))
    }

    /// Each row's contribution: its group and aggregate inputs, or none
    /// when the view's WHERE leaves it out.
    fn contributions(&self, batch: &RecordBatch) -> Result<Contributions, String> {
        let rows = batch.num_rows();
        let eval = |e: &Arc<dyn PhysicalExpr>| -> Result<ArrayRef, String> {
            e.evaluate(batch)
                .and_then(|v| v.into_array(rows))
                .map_err(|e| e.to_string())
        };
        let keep = match &self.physical_filter {
            Some(f) => Some(eval(f)?),
            None => None,
        };
        let keep = match keep.as_ref() {
            Some(a) => Some(
                a.as_any()
                    .downcast_ref::<arrow::array::BooleanArray>()
                    .ok_or("the WHERE clause is not a boolean")?,
            ),
            None => None,
        };
        let groups = self.physical_groups.iter().map(eval).collect::<Result<Vec<_>, _>>()?;
        let groups = groups
            .iter()
            .map(|g| Cells::of(g.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut args = Vec::new();
        for (arg, filter) in &self.physical_aggs {
            let filter = match filter {
                Some(f) => Some(eval(f)?),
                None => None,
            };
            args.push((numbers(&eval(arg)?)?, filter));
        }
        let filters: Vec<Option<&arrow::array::BooleanArray>> = args
            .iter()
            .map(|(_, f)| {
                f.as_ref()
                    .and_then(|f| f.as_any().downcast_ref::<arrow::array::BooleanArray>())
            })
            .collect();
        let mut out = Contributions {
            kept: Vec::with_capacity(rows),
            ends: Vec::with_capacity(rows),
            keys: Vec::with_capacity(rows * 24),
            inputs: Vec::with_capacity(rows * args.len()),
            aggs: args.len(),
        };
        for row in 0..rows {
            let kept = keep.is_none_or(|k| k.is_valid(row) && k.value(row));
            out.kept.push(kept);
            if kept {
                for g in &groups {
                    g.encode(row, &mut out.keys);
                }
                for ((values, filter), passes) in args.iter().zip(&filters) {
                    let passes = match (filter, passes) {
                        (None, _) => true,
                        (Some(_), Some(f)) => f.is_valid(row) && f.value(row),
                        (Some(_), None) => false,
                    };
                    out.inputs.push(if passes { values[row] } else { None });
                }
            } else {
                out.inputs.extend(std::iter::repeat_n(None, args.len()));
            }
            out.ends.push(out.keys.len());
        }
        Ok(out)
    }

    /// The view's rows from per-group partial sums.
    fn finish(&self, groups: &[(&[u8], std::borrow::Cow<'_, Partial>)]) -> Result<RecordBatch, String> {
        let mut live: Vec<(Vec<ScalarValue>, &Partial)> = Vec::new();
        for (key, partial) in groups {
            if partial.rows > 0 {
                live.push((self.decode_group(key)?, partial.as_ref()));
            }
        }
        // In group order, as a reader expects of a table.
        live.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (i, data_type) in self.group_types.iter().enumerate() {
            let values: Vec<ScalarValue> = live.iter().map(|(g, _)| g[i].clone()).collect();
            columns.push(if values.is_empty() {
                arrow::array::new_empty_array(data_type)
            } else {
                ScalarValue::iter_to_array(values).map_err(|e| e.to_string())?
            });
        }
        for (i, (kind, _, _)) in self.aggs.iter().enumerate() {
            let accs = live.iter().map(|(_, p)| p.accs[i]);
            columns.push(match kind {
                Kind::Count => Arc::new(accs.map(|a| Some(a.n)).collect::<Int64Array>()),
                Kind::SumInt => Arc::new(accs.map(|a| (a.n > 0).then_some(a.int as i64)).collect::<Int64Array>()),
                Kind::SumFloat => Arc::new(accs.map(|a| (a.n > 0).then_some(a.float)).collect::<Float64Array>()),
                Kind::Avg => Arc::new(
                    accs.map(|a| (a.n > 0).then(|| a.float / a.n as f64))
                        .collect::<Float64Array>(),
                ),
            });
        }
        let fields: Vec<Field> = self
            .agg_schema
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
            .collect();
        let aggregated = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())?;
        let rows = aggregated.num_rows();
        let columns = self
            .projection
            .iter()
            .map(|e| {
                e.evaluate(&aggregated)
                    .and_then(|v| v.into_array(rows))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
    }

    /// A batch version's partial rows (see [`Mergeable::partial_plan`]) as
    /// per-group sums.
    pub fn read_partials(&self, batches: &[RecordBatch]) -> Result<Sums, String> {
        let mut out = Sums::default();
        for batch in batches {
            self.add_partials(batch, 1, &mut out)?;
        }
        Ok(out)
    }

    /// Adds `sign` × the partial rows of `batch` to `out`.
    fn add_partials(&self, batch: &RecordBatch, sign: i64, out: &mut Sums) -> Result<(), String> {
        let g = self.groups.len();
        let cells = (0..g)
            .map(|i| Cells::of(batch.column(i).as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let mut group = Vec::new();
            for c in &cells {
                c.encode(row, &mut group);
            }
            let int = |c: usize| -> Result<i64, String> {
                let column = batch.column(c);
                if column.is_null(row) {
                    return Ok(0);
                }
                column
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .map(|a| a.value(row))
                    .ok_or_else(|| format!("column {c} of the version is not an integer"))
            };
            let mut c = g;
            let mut accs = Vec::new();
            for (kind, _, _) in &self.aggs {
                let mut acc = Acc::default();
                match kind {
                    Kind::Count => {
                        acc.n = int(c)?;
                        c += 1;
                    }
                    Kind::SumInt => {
                        acc.int = i128::from(int(c)?);
                        acc.n = int(c + 1)?;
                        c += 2;
                    }
                    Kind::SumFloat | Kind::Avg => {
                        let column = batch.column(c);
                        acc.float = if column.is_null(row) {
                            0.0
                        } else {
                            column
                                .as_any()
                                .downcast_ref::<Float64Array>()
                                .map(|a| a.value(row))
                                .ok_or_else(|| format!("column {c} of the version is not a float"))?
                        };
                        acc.n = int(c + 1)?;
                        c += 2;
                    }
                }
                accs.push(acc);
            }
            let rows = int(c)?;
            let partial = Partial {
                rows,
                accs,
                dirty: false,
            };
            out.entry(group).or_default().merge(&partial, sign);
        }
        Ok(())
    }
}

impl Mergeable {
    /// A group's values from its stored bytes.
    fn decode_group(&self, bytes: &[u8]) -> Result<Vec<ScalarValue>, String> {
        let mut r = Reader(bytes);
        self.group_types
            .iter()
            .map(|t| decode_scalar(&mut r, t))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("view {}: a damaged group in the state", self.name))
    }
}

/// A group column's cells, typed once per batch, appended as
/// [`decode_scalar`] reads them.
struct Cells<'a> {
    nulls: Option<&'a arrow::buffer::NullBuffer>,
    values: Values<'a>,
}

enum Values<'a> {
    Utf8(&'a arrow::array::StringArray),
    LargeUtf8(&'a arrow::array::LargeStringArray),
    Utf8View(&'a arrow::array::StringViewArray),
    /// Int64 and µs timestamps.
    I64(&'a [i64]),
    /// Int32 and Date32.
    I32(&'a [i32]),
    F64(&'a [f64]),
    Bool(&'a arrow::array::BooleanArray),
}

impl<'a> Cells<'a> {
    fn of(array: &'a dyn Array) -> Result<Cells<'a>, String> {
        use arrow::array::AsArray;
        use arrow::datatypes::{Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
        let values = match array.data_type() {
            DataType::Utf8 => Values::Utf8(array.as_string::<i32>()),
            DataType::LargeUtf8 => Values::LargeUtf8(array.as_string::<i64>()),
            DataType::Utf8View => Values::Utf8View(array.as_string_view()),
            DataType::Int64 => Values::I64(array.as_primitive::<Int64Type>().values()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Values::I64(array.as_primitive::<TimestampMicrosecondType>().values())
            }
            DataType::Int32 => Values::I32(array.as_primitive::<Int32Type>().values()),
            DataType::Date32 => Values::I32(array.as_primitive::<Date32Type>().values()),
            DataType::Float64 => Values::F64(array.as_primitive::<Float64Type>().values()),
            DataType::Boolean => Values::Bool(array.as_boolean()),
            other => return Err(format!("a group value of type {other} is not kept by the speed layer")),
        };
        Ok(Cells {
            nulls: array.nulls(),
            values,
        })
    }

    /// Appends cell `row`.
    fn encode(&self, row: usize, out: &mut Vec<u8>) {
        if self.nulls.is_some_and(|n| n.is_null(row)) {
            out.push(0);
            return;
        }
        out.push(1);
        let string = |s: &str, out: &mut Vec<u8>| {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        };
        match &self.values {
            Values::Utf8(a) => string(a.value(row), out),
            Values::LargeUtf8(a) => string(a.value(row), out),
            Values::Utf8View(a) => string(a.value(row), out),
            Values::I64(v) => out.extend_from_slice(&v[row].to_be_bytes()),
            Values::I32(v) => out.extend_from_slice(&v[row].to_be_bytes()),
            Values::F64(v) => out.extend_from_slice(&v[row].to_bits().to_be_bytes()),
            Values::Bool(a) => out.push(u8::from(a.value(row))),
        }
    }
}

/// An aggregate input of one row: integer or float, or none.
fn numbers(array: &ArrayRef) -> Result<Vec<Option<Num>>, String> {
    let n = array.len();
    if let Some(a) = array.as_any().downcast_ref::<Int64Array>() {
        return Ok((0..n).map(|i| a.is_valid(i).then(|| Num::Int(a.value(i)))).collect());
    }
    if let Some(a) = array.as_any().downcast_ref::<Float64Array>() {
        return Ok((0..n).map(|i| a.is_valid(i).then(|| Num::Float(a.value(i)))).collect());
    }
    // Other types (text for count(id)) count as present or absent.
    if matches!(array.data_type(), DataType::Int32 | DataType::Float32) {
        let a = arrow::compute::cast(array, &DataType::Float64).map_err(|e| e.to_string())?;
        return numbers(&a);
    }
    Ok((0..n).map(|i| array.is_valid(i).then_some(Num::Int(1))).collect())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i64),
    Float(f64),
}

/// The parts of a batch's rows in one view.
struct Contributions {
    /// Per row: whether the view's WHERE keeps it.
    kept: Vec<bool>,
    /// Per row: where its group's encoding ([`Cells::encode`]) ends in `keys`.
    ends: Vec<usize>,
    keys: Vec<u8>,
    /// Per row, `aggs` aggregate inputs.
    inputs: Vec<Option<Num>>,
    aggs: usize,
}

impl Contributions {
    /// Row `row`'s group and inputs, if the view keeps it.
    fn row(&self, row: usize) -> Option<(&[u8], &[Option<Num>])> {
        if !self.kept[row] {
            return None;
        }
        let start = if row == 0 { 0 } else { self.ends[row - 1] };
        Some((
            &self.keys[start..self.ends[row]],
            &self.inputs[row * self.aggs..(row + 1) * self.aggs],
        ))
    }
}

/// One aggregate's running sums.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Acc {
    n: i64,
    int: i128,
    float: f64,
}

/// A group's running sums: its rows and each aggregate's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Partial {
    rows: i64,
    accs: Vec<Acc>,
    /// Changed since the state last stored it.
    dirty: bool,
}

impl Partial {
    fn is_zero(&self) -> bool {
        self.rows == 0 && self.accs.iter().all(|a| a.n == 0 && a.int == 0 && a.float == 0.0)
    }

    /// Adds `sign` × one row's `inputs`; whether the group was clean.
    fn add(&mut self, inputs: &[Option<Num>], sign: i64) -> bool {
        self.rows += sign;
        if self.accs.len() != inputs.len() {
            self.accs.resize(inputs.len(), Acc::default());
        }
        for (acc, input) in self.accs.iter_mut().zip(inputs) {
            match input {
                Some(Num::Int(v)) => {
                    acc.n += sign;
                    acc.int += i128::from(*v) * i128::from(sign);
                    acc.float += *v as f64 * sign as f64;
                }
                Some(Num::Float(v)) => {
                    acc.n += sign;
                    acc.float += v * sign as f64;
                }
                None => {}
            }
        }
        !std::mem::replace(&mut self.dirty, true)
    }

    /// Adds `sign` (1 or -1) × `other`.
    fn merge(&mut self, other: &Partial, sign: i64) {
        self.rows += sign * other.rows;
        self.accs.resize(other.accs.len().max(self.accs.len()), Acc::default());
        for (a, b) in self.accs.iter_mut().zip(&other.accs) {
            a.n += sign * b.n;
            a.int += i128::from(sign) * b.int;
            a.float += sign as f64 * b.float;
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rows.to_be_bytes());
        for acc in &self.accs {
            out.extend_from_slice(&acc.n.to_be_bytes());
            out.extend_from_slice(&acc.int.to_be_bytes());
            out.extend_from_slice(&acc.float.to_bits().to_be_bytes());
        }
    }

    fn decode(bytes: &[u8]) -> Option<Partial> {
        let mut r = Reader(bytes);
        let rows = r.i64()?;
        let mut accs = Vec::new();
        while !r.0.is_empty() {
            accs.push(Acc {
                n: r.i64()?,
                int: i128::from_be_bytes(r.take(16)?.try_into().ok()?),
                float: f64::from_bits(r.i64()? as u64),
            });
        }
        Some(Partial {
            rows,
            accs,
            dirty: false,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
}

fn decode_scalar(r: &mut Reader<'_>, data_type: &DataType) -> Option<ScalarValue> {
    if r.u8()? == 0 {
        return ScalarValue::try_from(data_type).ok();
    }
    Some(match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let n = u32::from_be_bytes(r.take(4)?.try_into().ok()?) as usize;
            let s = String::from_utf8(r.take(n)?.to_vec()).ok()?;
            match data_type {
                DataType::Utf8 => ScalarValue::Utf8(Some(s)),
                DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(s)),
                _ => ScalarValue::Utf8View(Some(s)),
            }
        }
        DataType::Int64 => ScalarValue::Int64(Some(r.i64()?)),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => ScalarValue::TimestampMicrosecond(Some(r.i64()?), tz.clone()),
        DataType::Int32 => ScalarValue::Int32(Some(i32::from_be_bytes(r.take(4)?.try_into().ok()?))),
        DataType::Date32 => ScalarValue::Date32(Some(i32::from_be_bytes(r.take(4)?.try_into().ok()?))),
        DataType::Float64 => ScalarValue::Float64(Some(f64::from_bits(r.i64()? as u64))),
        DataType::Boolean => ScalarValue::Boolean(Some(r.u8()? != 0)),
        _ => return None,
    })
}

/// The posts of `batch` (some of the record's columns, by name; the
/// others empty, absent or 0).
fn posts_of(batch: &RecordBatch) -> Result<Vec<crate::record::Post>, String> {
    use crate::record::{IncomingPost, Post, Scores, Sentiment, column};
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
    let rows = batch.num_rows();
    let column = |name: &str, data_type: &DataType| -> Result<Option<ArrayRef>, String> {
        batch
            .column_by_name(name)
            .map(|c| arrow::compute::cast(c, data_type).map_err(|e| format!("{name}: {e}")))
            .transpose()
    };
    let strings = |name: &str| -> Result<Vec<Option<String>>, String> {
        Ok(match column(name, &DataType::Utf8)? {
            Some(c) => c.as_string::<i32>().iter().map(|v| v.map(String::from)).collect(),
            None => vec![None; rows],
        })
    };
    let ints = |name: &str, data_type: &DataType| -> Result<Vec<Option<i64>>, String> {
        Ok(match column(name, data_type)? {
            Some(c) if matches!(data_type, DataType::Int64) => c.as_primitive::<Int64Type>().iter().collect(),
            Some(c) => c.as_primitive::<TimestampMicrosecondType>().iter().collect(),
            None => vec![None; rows],
        })
    };
    let floats = |name: &str| -> Result<Vec<f64>, String> {
        Ok(match column(name, &DataType::Float64)? {
            Some(c) => c
                .as_primitive::<Float64Type>()
                .iter()
                .map(|v| v.unwrap_or(0.0))
                .collect(),
            None => vec![0.0; rows],
        })
    };
    let time = crate::record::batch::timestamp_type();
    let (mut platform, mut id) = (strings(column::PLATFORM)?, strings(column::ID)?);
    let (mut community, mut author) = (strings(column::COMMUNITY)?, strings(column::AUTHOR)?);
    let (mut body, mut text) = (strings(column::BODY)?, strings(column::TEXT)?);
    let (created_at, ingested_at) = (ints(column::CREATED_AT, &time)?, ints(column::INGESTED_AT, &time)?);
    let (mut parent_id, mut thread_id, mut url) = (
        strings(column::PARENT_ID)?,
        strings(column::THREAD_ID)?,
        strings(column::URL)?,
    );
    let int = DataType::Int64;
    let (score, reposts, followers) = (
        ints(column::SCORE, &int)?,
        ints(column::REPOSTS, &int)?,
        ints(column::AUTHOR_FOLLOWERS, &int)?,
    );
    let (mut location, mut lang) = (strings(column::LOCATION)?, strings(column::LANG)?);
    let (polarity, subjectivity) = (floats(column::POLARITY)?, floats(column::SUBJECTIVITY)?);
    let (neg, neu, pos, compound) = (
        floats(column::VADER_NEG)?,
        floats(column::VADER_NEU)?,
        floats(column::VADER_POS)?,
        floats(column::VADER_COMPOUND)?,
    );
    let sentiment = strings(column::SENTIMENT)?;
    let mut posts = Vec::with_capacity(rows);
    for row in 0..rows {
        let take = |v: &mut Vec<Option<String>>| v[row].take();
        let incoming = IncomingPost {
            platform: take(&mut platform).unwrap_or_default(),
            id: take(&mut id).unwrap_or_default(),
            community: take(&mut community),
            author: take(&mut author),
            body: take(&mut body).unwrap_or_default(),
            created_at: created_at[row].unwrap_or(0),
            parent_id: take(&mut parent_id),
            thread_id: take(&mut thread_id),
            url: take(&mut url),
            score: score[row],
            reposts: reposts[row],
            author_followers: followers[row],
            location: take(&mut location),
            lang: take(&mut lang),
        };
        let sentiment = match sentiment[row].as_deref() {
            Some("positive") => Sentiment::Positive,
            Some("negative") => Sentiment::Negative,
            _ => Sentiment::Neutral,
        };
        posts.push(Post {
            incoming,
            text: take(&mut text).unwrap_or_default(),
            ingested_at: ingested_at[row].unwrap_or(0),
            scores: Scores {
                polarity: polarity[row],
                subjectivity: subjectivity[row],
                vader_neg: neg[row],
                vader_neu: neu[row],
                vader_pos: pos[row],
                vader_compound: compound[row],
                sentiment,
            },
        });
    }
    Ok(posts)
}

/// Entries read from the state at once.
const SCAN_STEP: usize = 10_000;

/// Calls `f` with the state entries under `prefix`, [`SCAN_STEP`] at a
/// time, in key order (`f` may remove the entries it is given).
fn for_each_step(
    log: &dyn Log,
    prefix: &[u8],
    mut f: impl FnMut(&[crate::log::StateEntry]) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let entries = log.scan_state(prefix, after.as_deref(), SCAN_STEP)?;
        f(&entries)?;
        if entries.len() < SCAN_STEP {
            return Ok(());
        }
        after = entries.last().map(|(k, _)| k.clone());
    }
}

/// Where an epoch of a view begins: per partition, the first offset it
/// counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Epoch {
    id: u32,
    start: Vec<u64>,
}

/// One view's speed state: its epochs (oldest first) and their sums.
struct ViewState {
    epochs: Vec<Epoch>,
    sums: Vec<Sums>,
    /// Groups changed since the last flush (marked dirty), by epoch id.
    changed: HashMap<u32, Vec<Vec<u8>>>,
    /// The current version's partial sums, read once per version.
    base: Option<(String, Sums)>,
}

impl ViewState {
    /// Adds `sign` × a row (its group and inputs) to epoch `e` (whose id
    /// is `epoch_id`), allocating only for a group new to it.
    fn add(&mut self, e: usize, epoch_id: u32, (group, inputs): (&[u8], &[Option<Num>]), sign: i64) {
        let sums = &mut self.sums[e];
        let was_clean = match sums.get_mut(group) {
            Some(partial) => partial.add(inputs, sign),
            None => sums.entry(group.to_vec()).or_default().add(inputs, sign),
        };
        if was_clean {
            self.changed.entry(epoch_id).or_default().push(group.to_vec());
        }
    }

    /// The epoch a record at `offset` of `partition` falls in (`None`:
    /// before the first, covered by a batch version already).
    fn epoch_of(&self, partition: u32, offset: u64) -> Option<usize> {
        self.epochs
            .iter()
            .rposition(|e| e.start.get(partition as usize).is_some_and(|s| offset >= *s))
    }
}

/// Records the speed layer turns into columns and adds at once (the
/// consume loop hands it up to 4,096): smaller steps keep a step's decoded
/// posts and columns fewer, and measured a little faster in
/// `examples/bench_speed.rs` (docs/BENCHMARKS.md, 2026-12-03 evening).
const APPLY_ROWS: usize = 1024;

/// What the speed layer holds, behind one lock.
pub struct SpeedState {
    views: Vec<ViewState>,
}

/// The speed layer of the mergeable views.
pub struct Speed {
    /// The views it keeps, in the order of their stored contributions.
    pub views: Vec<Mergeable>,
    state: tokio::sync::Mutex<SpeedState>,
    partitions: u32,
    /// Which columns of `posts_latest` any view reads.
    reads: Vec<bool>,
    /// The same, of a record's 23 columns: those decoded of each record.
    decodes: [bool; 23],
    /// Views whose expressions failed on a post, with the error: served
    /// from their batch version alone from then on.
    broken: std::sync::Mutex<HashMap<String, String>>,
    /// The columns the seen-state keeps of each post for the views.
    priors: Priors,
}

/// Why the speed layer stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpeedError {
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A record or the state could not be read.
    #[error("speed layer: {0}")]
    Other(String),
}

/// A view's current batch version of partial sums: where its snapshot
/// ends, and its directory.
#[derive(Debug, Clone)]
pub struct Base {
    /// Per partition of `posts.enriched`, the offset its snapshot reached.
    pub until: Vec<u64>,
    /// Where its Parquet file is.
    pub dir: std::path::PathBuf,
}

/// The columns the seen-state keeps of each post for `views`: those their
/// expressions read (`dt` and `hour` come from `created_at`).
pub(crate) fn priors_of(views: &[Mergeable]) -> Priors {
    let mut keep = [false; 23];
    for &i in views.iter().flat_map(|v| &v.reads) {
        match i {
            0..23 => keep[i] = true,
            _ => keep[6] = true,
        }
    }
    // The key says platform and id.
    keep[0] = false;
    keep[1] = false;
    Priors { keep }
}

impl Speed {
    /// The speed layer of `views` over `log`, restored from the state;
    /// `versions` gives each view's current batch version of partial sums,
    /// if it has one. When the state does not fit the views, the versions
    /// or the seen-state's priors (views changed, the layer was off, a
    /// version was made without it), it is built again from `posts_latest`
    /// now (queries of `engine` within `bounds`): the sums past each
    /// version, and when the priors' layout changed, the priors of every
    /// post. Nothing may write `posts.enriched` meanwhile: the server opens
    /// it before its stages start.
    pub async fn open(
        log: &dyn Log,
        (engine, bounds): (&crate::query::QueryEngine, &crate::query::QueryConfig),
        views: Vec<Mergeable>,
        versions: &[Option<Base>],
    ) -> Result<Speed, SpeedError> {
        let partitions = log.partitions();
        let priors = priors_of(&views);
        let mut fingerprint = format!("v3|{}", priors.id()).into_bytes();
        for view in &views {
            fingerprint.extend_from_slice(view.name.as_bytes());
            fingerprint.push(0);
            // The layout of the stored state is part of it.
            fingerprint.extend_from_slice(format!("{:?}|{:?}", view.groups, view.aggs).as_bytes());
            fingerprint.push(0);
        }
        let fingerprint = xxhash_rust::xxh3::xxh3_128(&fingerprint).to_be_bytes().to_vec();
        let stored = log.state(FINGERPRINT_KEY)?;
        let mut fresh = stored.as_deref() != Some(fingerprint.as_slice());
        let zeros = vec![0; partitions as usize];
        let start_of = |version: &Option<Base>| version.as_ref().map_or_else(|| zeros.clone(), |b| b.until.clone());
        // Each view's epochs must begin where its current version ends
        // (or at 0 without one): else a version was made while the layer
        // was off, and what the state adds up no longer fits it.
        for (view, version) in views.iter().zip(versions) {
            let key = format!("{EPOCHS_PREFIX}{}", view.name);
            let Some(bytes) = log.state(key.as_bytes())? else {
                fresh = true;
                continue;
            };
            let epochs: Vec<Epoch> =
                serde_json::from_slice(&bytes).map_err(|e| SpeedError::Other(format!("{key}: {e}")))?;
            if !epochs.iter().any(|e| e.start == start_of(version)) {
                fresh = true;
            }
        }
        // Records the stage has not read must still be in the log (while
        // the layer was off, retention did not wait for it).
        for p in 0..partitions {
            let next = log.committed(CONSUMER, Topic::Enriched, p)?;
            if log
                .read(Topic::Enriched, p, next, 1, 1 << 20)?
                .first()
                .is_some_and(|e| e.offset > next)
            {
                fresh = true;
            }
        }
        // Records carry what they replace only while the seen-state keeps
        // priors in this layout.
        let priors_kept = crate::transforms::enrich::priors_state(log)?.is_some_and(|p| p.id == priors.id());
        if !priors_kept || fresh {
            Speed::build(log, (engine, bounds), &views, versions, (&priors, !priors_kept)).await?;
            let mut tx = Transaction::new();
            tx.put_state(FINGERPRINT_KEY, &fingerprint);
            log.write(&tx)?;
        }
        let mut broken = HashMap::new();
        for view in &views {
            if let Some(error) = log.state(format!("{BROKEN_PREFIX}{}", view.name).as_bytes())? {
                broken.insert(view.name.clone(), String::from_utf8_lossy(&error).into_owned());
            }
        }
        let mut states = Vec::new();
        for view in &views {
            let key = format!("{EPOCHS_PREFIX}{}", view.name);
            let epochs: Vec<Epoch> = match log.state(key.as_bytes())? {
                Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| SpeedError::Other(format!("{key}: {e}")))?,
                None => return Err(SpeedError::Other(format!("{key} is missing from the state"))),
            };
            let mut sums = vec![Sums::default(); epochs.len()];
            for (e, epoch) in epochs.iter().enumerate() {
                let prefix = sums_prefix(&view.name, epoch.id);
                let mut damaged = false;
                for_each_step(log, prefix.as_bytes(), |entries| {
                    for (key, value) in entries {
                        match Partial::decode(value) {
                            Some(partial) => {
                                sums[e].insert(key[prefix.len()..].to_vec(), partial);
                            }
                            None => damaged = true,
                        }
                    }
                    Ok(())
                })?;
                if damaged {
                    return Err(SpeedError::Other(format!("damaged sums under {prefix}")));
                }
            }
            states.push(ViewState {
                epochs,
                sums,
                changed: Default::default(),
                base: None,
            });
        }
        let mut reads = vec![false; posts_schema().fields().len()];
        for index in views.iter().flat_map(|v| &v.reads) {
            if let Some(r) = reads.get_mut(*index) {
                *r = true;
            }
        }
        let decodes = std::array::from_fn(|i| reads[i]);
        Ok(Speed {
            views,
            state: tokio::sync::Mutex::new(SpeedState { views: states }),
            partitions,
            priors,
            decodes,
            reads,
            broken: std::sync::Mutex::new(broken),
        })
    }

    /// Builds the state again from `posts_latest` now: with `priors.1`,
    /// first the seen-state's priors of every post; then for each view its
    /// first epoch, beginning where its version ends, holding what
    /// `posts_latest` adds to the version (its partial sums now less the
    /// version's); and the stage's offsets where that snapshot ends.
    async fn build(
        log: &dyn Log,
        (engine, bounds): (&crate::query::QueryEngine, &crate::query::QueryConfig),
        views: &[Mergeable],
        versions: &[Option<Base>],
        (priors, with_priors): (&Priors, bool),
    ) -> Result<(), SpeedError> {
        let failed = |e: &dyn std::fmt::Display| SpeedError::Other(format!("building the speed layer: {e}"));
        let started = std::time::Instant::now();
        tracing::info!(
            views = views.len(),
            priors = with_priors,
            "Building the speed layer from posts_latest."
        );
        let partitions = log.partitions() as usize;
        // The old state goes first, one step at a time (millions of
        // entries, for a state of an earlier version).
        let mut tx = Transaction::new();
        tx.remove_state(FINGERPRINT_KEY);
        log.write(&tx)?;
        for_each_step(log, b"speed/", |entries| {
            let mut tx = Transaction::new();
            for (key, _) in entries {
                tx.remove_state(key);
            }
            log.write(&tx).map(|_| ())
        })?;
        let mut snapshot: Option<Vec<u64>> = None;
        let mut same_snapshot = |until: Vec<u64>| match &snapshot {
            Some(s) if *s != until => Err(SpeedError::Other(
                "posts.enriched grew while the speed layer was being built from it".into(),
            )),
            _ => {
                snapshot = Some(until);
                Ok(())
            }
        };
        if with_priors {
            let mut columns = vec!["platform", "id", "ingested_at"];
            for (name, keep) in crate::record::column::ALL.iter().zip(priors.keep) {
                if keep && !columns.contains(name) {
                    columns.push(name);
                }
            }
            let sql = format!(
                "SELECT {} FROM {}",
                columns
                    .iter()
                    .map(|c| format!("\"{c}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                crate::query::POSTS_LATEST
            );
            let mut export = engine
                .export(crate::query::Statement::Sql(sql), bounds)
                .await
                .map_err(|e| failed(&e))?;
            let mut posts_done = 0u64;
            while let Some(batch) = export.batches.recv().await {
                let posts = posts_of(&batch.map_err(|e| failed(&e))?).map_err(|e| failed(&e))?;
                let views: Vec<PostView<'_>> = posts.iter().map(crate::record::Post::view).collect();
                crate::transforms::enrich::write_priors(log, priors, &views)?;
                posts_done += views.len() as u64;
            }
            crate::transforms::enrich::priors_done(log, priors)?;
            tracing::info!(
                posts = posts_done,
                "The seen-state keeps the speed layer's columns of every post."
            );
            same_snapshot(export.snapshot.until)?;
        }
        for (view, version) in views.iter().zip(versions) {
            let mut export = engine
                .export(view.partial_plan().map_err(|e| failed(&e))?, bounds)
                .await
                .map_err(|e| failed(&e))?;
            // One map of sums: the partials now added batch by batch as
            // they come, the version's taken away from it.
            let mut sums = Sums::default();
            while let Some(batch) = export.batches.recv().await {
                view.add_partials(&batch.map_err(|e| failed(&e))?, 1, &mut sums)
                    .map_err(|e| failed(&e))?;
            }
            same_snapshot(export.snapshot.until)?;
            if let Some(base) = version {
                for batch in super::read_version(&base.dir).map_err(|e| failed(&e))? {
                    view.add_partials(&batch, -1, &mut sums).map_err(|e| failed(&e))?;
                }
            }
            sums.retain(|_, p| !p.is_zero());
            let prefix = sums_prefix(&view.name, 0);
            let mut sums = sums.into_iter().peekable();
            while sums.peek().is_some() {
                let step: Vec<(Vec<u8>, Vec<u8>)> = sums
                    .by_ref()
                    .take(SCAN_STEP)
                    .map(|(group, partial)| {
                        let mut key = prefix.clone().into_bytes();
                        key.extend_from_slice(&group);
                        let mut value = Vec::new();
                        partial.encode(&mut value);
                        (key, value)
                    })
                    .collect();
                let mut tx = Transaction::new();
                for (key, value) in &step {
                    tx.put_state(key, value);
                }
                log.write(&tx)?;
            }
            let epochs = vec![Epoch {
                id: 0,
                start: version
                    .as_ref()
                    .map_or_else(|| vec![0; partitions], |b| b.until.clone()),
            }];
            let json = serde_json::to_vec(&epochs).map_err(|e| failed(&e))?;
            let mut tx = Transaction::new();
            let key = format!("{EPOCHS_PREFIX}{}", view.name);
            tx.put_state(key.as_bytes(), &json);
            log.write(&tx)?;
        }
        // The stage reads on from where the snapshot ends.
        let until =
            snapshot.unwrap_or_else(|| log.end_offsets(Topic::Enriched).unwrap_or_else(|_| vec![0; partitions]));
        let mut tx = Transaction::new();
        for (p, next) in until.iter().enumerate() {
            tx.commit(CONSUMER, Topic::Enriched, p as u32, *next);
        }
        log.write(&tx)?;
        tracing::info!(seconds = started.elapsed().as_secs_f64(), "The speed layer is built.");
        Ok(())
    }

    /// The columns the seen-state must keep of each post for these views.
    pub fn priors(&self) -> &Priors {
        &self.priors
    }

    /// The view named `name`, if the speed layer keeps it.
    pub fn view(&self, name: &str) -> Option<usize> {
        self.views.iter().position(|v| v.name == name)
    }

    /// Why the speed layer stopped keeping view `name`, if it did.
    pub fn broken(&self, name: &str) -> Option<String> {
        self.broken.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Pauses the stage (it waits for the returned guard), for a batch run
    /// to plan its snapshot.
    pub async fn pause(&self) -> tokio::sync::MutexGuard<'_, SpeedState> {
        self.state.lock().await
    }

    /// Under the pause: a new epoch of view `v` begins at `until` (a batch
    /// snapshot); made durable before it returns.
    pub fn begin_epoch(
        &self,
        log: &dyn Log,
        state: &mut SpeedState,
        v: usize,
        until: &[u64],
    ) -> Result<(), SpeedError> {
        let view = &mut state.views[v];
        if view.epochs.last().is_some_and(|e| e.start == until) {
            return Ok(());
        }
        let id = view.epochs.last().map_or(0, |e| e.id + 1);
        view.epochs.push(Epoch {
            id,
            start: until.to_vec(),
        });
        view.sums.push(Sums::default());
        let mut tx = Transaction::new();
        let key = format!("{EPOCHS_PREFIX}{}", self.views[v].name);
        let value = serde_json::to_vec(&view.epochs).map_err(|e| SpeedError::Other(e.to_string()))?;
        tx.put_state(key.as_bytes(), &value);
        log.write(&tx)?;
        Ok(())
    }

    /// Under the pause: the version with snapshot `until` is current now;
    /// the epochs before it are dropped.
    pub fn published(&self, log: &dyn Log, state: &mut SpeedState, v: usize, until: &[u64]) -> Result<(), SpeedError> {
        let view = &mut state.views[v];
        let Some(first_kept) = view.epochs.iter().position(|e| e.start == until) else {
            return Ok(());
        };
        let dropped: Vec<Epoch> = view.epochs.drain(..first_kept).collect();
        view.sums.drain(..first_kept);
        view.base = None;
        let dropped_ids: Vec<u32> = dropped.iter().map(|e| e.id).collect();
        view.changed.retain(|id, _| !dropped_ids.contains(id));
        let name = &self.views[v].name;
        let mut tx = Transaction::new();
        let key = format!("{EPOCHS_PREFIX}{name}");
        let value = serde_json::to_vec(&view.epochs).map_err(|e| SpeedError::Other(e.to_string()))?;
        tx.put_state(key.as_bytes(), &value);
        let mut removed = Vec::new();
        for epoch in &dropped {
            let prefix = sums_prefix(name, epoch.id);
            for_each_step(log, prefix.as_bytes(), |entries| {
                removed.extend(entries.iter().map(|(k, _)| k.clone()));
                Ok(())
            })?;
        }
        for key in &removed {
            tx.remove_state(key);
        }
        log.write(&tx)?;
        Ok(())
    }

    /// The served rows of view `v`: the current version's partial sums
    /// (`version`: its name and batches, read when not cached), plus the
    /// epochs at or past its snapshot `until`.
    pub fn serve(
        &self,
        state: &mut SpeedState,
        v: usize,
        version: Option<(&str, &[u64])>,
        read: impl FnOnce() -> Result<Vec<RecordBatch>, String>,
    ) -> Result<RecordBatch, String> {
        let view = &self.views[v];
        let st = &mut state.views[v];
        let broken = self.broken(&view.name).is_some();
        let until: Vec<u64> = version.map_or_else(|| vec![0; self.partitions as usize], |(_, u)| u.to_vec());
        if let Some((name, _)) = version
            && st.base.as_ref().is_none_or(|(n, _)| n != name)
        {
            st.base = Some((name.to_string(), view.read_partials(&read()?)?));
        }
        let st = &state.views[v];
        let empty = Sums::default();
        let base = match (version, &st.base) {
            (Some(_), Some((_, base))) => base,
            _ => &empty,
        };
        let overlays: Vec<&Sums> = st
            .epochs
            .iter()
            .zip(&st.sums)
            .filter(|(epoch, _)| !broken && epoch.start.iter().zip(&until).all(|(s, u)| s >= u))
            .map(|(_, sums)| sums)
            .collect();
        // The version's sums, borrowed unless an epoch changed the group.
        let mut groups: Vec<(&[u8], std::borrow::Cow<'_, Partial>)> = Vec::with_capacity(base.len());
        for (group, partial) in base {
            groups.push((group, summed(group, partial, &overlays)));
        }
        for (i, overlay) in overlays.iter().enumerate() {
            for (group, partial) in overlay.iter() {
                if base.contains_key(group) || overlays[..i].iter().any(|o| o.contains_key(group)) {
                    continue;
                }
                groups.push((group, summed(group, partial, &overlays[i + 1..])));
            }
        }
        view.finish(&groups)
    }
}

/// `first` plus the sums of its group in `rest`, borrowed when there are none.
fn summed<'a>(group: &[u8], first: &'a Partial, rest: &[&Sums]) -> std::borrow::Cow<'a, Partial> {
    let mut extra = rest.iter().filter_map(|o| o.get(group)).peekable();
    if extra.peek().is_none() {
        return std::borrow::Cow::Borrowed(first);
    }
    let mut total = first.clone();
    for partial in extra {
        total.merge(partial, 1);
    }
    std::borrow::Cow::Owned(total)
}

impl Speed {
    /// Applies enriched records of `partition` (in offset order): each adds
    /// its contribution and takes back that of the version it replaces,
    /// which it carries ([`Prior`]); one older than the version counted
    /// changes nothing.
    fn apply(&self, log: &dyn Log, partition: u32, entries: &[Entry]) -> Result<(), SpeedError> {
        for chunk in entries.chunks(APPLY_ROWS) {
            self.apply_chunk(log, partition, chunk)?;
        }
        Ok(())
    }

    /// [`Speed::apply`] of at most [`APPLY_ROWS`] records.
    fn apply_chunk(&self, log: &dyn Log, partition: u32, entries: &[Entry]) -> Result<(), SpeedError> {
        let mut posts: Vec<PostView<'_>> = Vec::with_capacity(entries.len());
        let mut offsets: Vec<u64> = Vec::with_capacity(entries.len());
        // Per post: the index of the version it replaces in `replaced`.
        let mut replaces: Vec<Option<usize>> = Vec::with_capacity(entries.len());
        let mut replaced: Vec<PostView<'_>> = Vec::new();
        let mut damaged = None;
        for entry in entries {
            // A record the archive cannot read goes to its dead letters;
            // here it is left out.
            let Ok((post, prior)) = PostView::with_prior_reading(&entry.value, &self.decodes) else {
                continue;
            };
            match prior {
                Prior::Stale => continue,
                Prior::None => replaces.push(None),
                Prior::Replaces(bytes) => match PostView::from_log_bytes(bytes) {
                    Ok(mut old) => {
                        old.incoming.platform = post.incoming.platform.clone();
                        old.incoming.id = post.incoming.id.clone();
                        replaces.push(Some(replaced.len()));
                        replaced.push(old);
                    }
                    Err(e) => {
                        damaged = Some(format!(
                            "the version replaced by record {} of posts.enriched partition {partition} does not read: {e}",
                            entry.offset
                        ));
                        replaces.push(None);
                    }
                },
            }
            offsets.push(entry.offset);
            posts.push(post);
        }
        if posts.is_empty() {
            return Ok(());
        }
        let batch = to_projected_batch(&posts, &self.reads).map_err(|e| SpeedError::Other(e.to_string()))?;
        // Most batches hold no re-send: nothing to evaluate for them.
        let old_batch = if replaced.is_empty() {
            None
        } else {
            Some(to_projected_batch(&replaced, &self.reads).map_err(|e| SpeedError::Other(e.to_string()))?)
        };
        // A view whose expressions fail on these posts (its SQL would fail
        // too) stops being kept: it is served from its batch version, and
        // says why; the others go on. A damaged prior stops them all.
        let mut newly_broken = Vec::new();
        let per_view: Vec<Option<(Contributions, Option<Contributions>)>> = self
            .views
            .iter()
            .map(|v| {
                if self.broken(&v.name).is_some() {
                    return None;
                }
                if let Some(error) = &damaged {
                    newly_broken.push((v.name.clone(), error.clone()));
                    return None;
                }
                let old = old_batch.as_ref().map(|b| v.contributions(b)).transpose();
                match v.contributions(&batch).and_then(|new| Ok((new, old?))) {
                    Ok(both) => Some(both),
                    Err(error) => {
                        newly_broken.push((v.name.clone(), format!("its SQL failed on a post: {error}")));
                        None
                    }
                }
            })
            .collect();
        if !newly_broken.is_empty() {
            for (name, error) in &newly_broken {
                tracing::error!(view = %name, error = %error, "The speed layer stops keeping this view; it is served from its batch version.");
            }
            let mut tx = Transaction::new();
            let keys: Vec<String> = newly_broken
                .iter()
                .map(|(name, _)| format!("{BROKEN_PREFIX}{name}"))
                .collect();
            for (key, (_, error)) in keys.iter().zip(&newly_broken) {
                tx.put_state(key.as_bytes(), error.as_bytes());
            }
            log.write(&tx)?;
            let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
            for (name, error) in newly_broken {
                broken.insert(name, error);
            }
        }
        let mut state = self.state.blocking_lock();
        for (view, contributions) in state.views.iter_mut().zip(&per_view) {
            let Some((new, old)) = contributions else {
                continue;
            };
            for (row, offset) in offsets.iter().enumerate() {
                let Some(e) = view.epoch_of(partition, *offset) else {
                    continue;
                };
                let epoch_id = view.epochs[e].id;
                if let (Some(old_row), Some(old)) = (replaces[row], old)
                    && let Some(part) = old.row(old_row)
                {
                    view.add(e, epoch_id, part, -1);
                }
                if let Some(part) = new.row(row) {
                    view.add(e, epoch_id, part, 1);
                }
            }
        }
        Ok(())
    }

    /// Writes the groups changed since the last flush with `commit`'s
    /// offsets, in one transaction.
    fn flush(&self, commit: Commit<'_>) -> Result<Committed, SpeedError> {
        let mut state = self.state.blocking_lock();
        let mut puts: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut removes: Vec<Vec<u8>> = Vec::new();
        for (view, st) in self.views.iter().zip(state.views.iter_mut()) {
            for (epoch_id, groups) in std::mem::take(&mut st.changed) {
                let Some(e) = st.epochs.iter().position(|e| e.id == epoch_id) else {
                    continue;
                };
                let prefix = sums_prefix(&view.name, epoch_id).into_bytes();
                for group in groups {
                    let mut key = prefix.clone();
                    key.extend_from_slice(&group);
                    match st.sums[e].get_mut(&group) {
                        // A re-send in the same group nets to no rows but
                        // other sums: kept unless every part is zero.
                        Some(p) if !p.is_zero() => {
                            p.dirty = false;
                            let mut value = Vec::with_capacity(8 + 40 * p.accs.len());
                            p.encode(&mut value);
                            puts.push((key, value));
                        }
                        _ => {
                            st.sums[e].remove(&group);
                            removes.push(key);
                        }
                    }
                }
            }
        }
        drop(state);
        let mut tx = Transaction::new();
        for (key, value) in &puts {
            tx.put_state(key, value);
        }
        for key in &removes {
            tx.remove_state(key);
        }
        Ok(commit.with(tx)?)
    }
}

/// How often, under load, the speed layer stores the groups it changed
/// with its offsets: after a crash it reads again at most this much of the
/// log. (What it serves is in memory, as fresh at any interval.) The
/// longer, the more re-counted groups one store covers.
const CHECKPOINT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long no record has to arrive before the speed layer stores what it
/// holds at once (when the log is idle, nothing waits for the checkpoint;
/// shorter, and the pauses of a throttled ingest made it store every few
/// hundred milliseconds).
const IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// The speed layer fed by the consume loop (without one, as when it could
/// not start, it only moves its offsets, so retention is not held back).
pub struct SpeedSink<'a> {
    speed: Option<&'a Speed>,
    log: &'a dyn Log,
    flushed: std::time::Instant,
    written: std::time::Instant,
}

impl<'a> SpeedSink<'a> {
    /// The sink of `speed` over `log`.
    pub fn new(speed: Option<&'a Speed>, log: &'a dyn Log) -> SpeedSink<'a> {
        let now = std::time::Instant::now();
        SpeedSink {
            speed,
            log,
            flushed: now,
            written: now,
        }
    }
}

impl Sink for SpeedSink<'_> {
    type Error = SpeedError;

    fn input(&self) -> Input {
        INPUT
    }

    fn write(&mut self, partition: u32, entries: &[Entry]) -> Result<(), SpeedError> {
        self.written = std::time::Instant::now();
        match self.speed {
            Some(speed) => speed.apply(self.log, partition, entries),
            None => Ok(()),
        }
    }

    fn due(&self, pending: &[u32]) -> Vec<u32> {
        if self.flushed.elapsed() >= CHECKPOINT || self.written.elapsed() >= IDLE {
            pending.to_vec()
        } else {
            Vec::new()
        }
    }

    fn flush(&mut self, commit: Commit<'_>) -> Result<Committed, SpeedError> {
        self.flushed = std::time::Instant::now();
        match self.speed {
            Some(speed) => speed.flush(commit),
            None => Ok(commit.now()?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_built_in_views_merge_and_others_say_why_not() {
        for (name, sql) in crate::views::BUILT_IN {
            let view = analyze(name, sql).await.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(view.name, name);
        }
        let refused = |sql: &str| futures::executor::block_on(analyze("x", sql)).unwrap_err();
        assert!(refused("SELECT community, max(score) AS m FROM posts_latest GROUP BY community").contains("max"));
        assert!(refused("SELECT count(*) AS n FROM posts").contains("posts_latest"));
        assert!(refused("SELECT community, count(DISTINCT author) FROM posts_latest GROUP BY 1").contains("DISTINCT"));
        assert!(
            refused("SELECT community, count(*) AS n FROM posts_latest GROUP BY 1 ORDER BY n").contains("ORDER BY")
        );
    }
}
