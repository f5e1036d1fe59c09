//! A built-in SQL function wrapped: everything said of it (name, aliases,
//! signature, types, simplification, ordering, documentation) is the
//! built-in's, and only a call goes through the wrapper first.

use std::sync::Arc;

use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// What a wrapper does with a call: answers it, refuses it, or leaves it
/// to `inner`, the built-in function.
pub trait Call: std::fmt::Debug + PartialEq + Eq + std::hash::Hash + Send + Sync + 'static {
    fn call(&self, inner: &ScalarUDF, args: ScalarFunctionArgs) -> Result<ColumnarValue>;
}

/// Replaces `ctx`'s function `name` (if it has one) with `call` over it.
pub fn wrap<C: Call>(ctx: &SessionContext, name: &str, call: C) {
    if let Ok(inner) = ctx.udf(name) {
        ctx.register_udf(ScalarUDF::new_from_impl(Wrapped { inner, call }));
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Wrapped<C> {
    inner: Arc<ScalarUDF>,
    call: C,
}

impl<C: Call> ScalarUDFImpl for Wrapped<C> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn output_ordering(&self, input: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(input)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.call.call(&self.inner, args)
    }
}
