//! CPython 3.12 float semantics that the reference analyzers depend on: the
//! builtin `sum()` (Neumaier-compensated since 3.12) and `round(x, n)`.
//!
//! Both analyzers are only bit-identical to Python when these two operations
//! are, so they live in one place with their own tests.

/// A number as Python's `sum()` sees it: the VADER sentiment list mixes
/// `int` zeros (and a few `int` idiom scores) with floats, and `sum()` adds
/// ints and floats differently.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum PyNum {
    Int(i64),
    Float(f64),
}

impl PyNum {
    /// The value as a double, like Python's `float(x)`.
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            PyNum::Int(i) => i as f64,
            PyNum::Float(f) => f,
        }
    }
}

/// `sum(items)` of CPython 3.12 with the default `start=0`.
///
/// CPython adds leading ints exactly as integers; the first float switches
/// to a double accumulator with Neumaier compensation, ints met after that
/// are added to the accumulator without compensation, and the compensation
/// is added once at the end when it is non-zero and finite. The result is
/// an `Int` only when every item was an int.
pub(crate) fn py_sum(items: impl IntoIterator<Item = PyNum>) -> PyNum {
    let mut sum = PySum::default();
    for item in items {
        sum.add(item);
    }
    sum.finish()
}

/// [`py_sum`] one item at a time.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PySum {
    /// Every item so far was an int: their exact sum.
    int_sum: i64,
    /// Once a float came: the running double and its compensation.
    float: Option<(f64, f64)>,
}

impl PySum {
    /// Adds one item as CPython's loop does.
    #[inline]
    pub(crate) fn add(&mut self, item: PyNum) {
        match (&mut self.float, item) {
            (None, PyNum::Int(i)) => self.int_sum += i,
            // `int + float` in Python converts the int and adds once.
            (None, PyNum::Float(x)) => self.float = Some((self.int_sum as f64 + x, 0.0)),
            (Some((f, _)), PyNum::Int(i)) => *f += i as f64,
            (Some((f, c)), PyNum::Float(x)) => {
                let t = *f + x;
                if f.abs() >= x.abs() {
                    *c += (*f - t) + x;
                } else {
                    *c += (x - t) + *f;
                }
                *f = t;
            }
        }
    }

    /// The sum.
    pub(crate) fn finish(self) -> PyNum {
        match self.float {
            None => PyNum::Int(self.int_sum),
            Some((f, c)) if c != 0.0 && c.is_finite() => PyNum::Float(f + c),
            Some((f, _)) => PyNum::Float(f),
        }
    }
}

/// `sum(floats)` of CPython 3.12 over a list of floats only.
pub(crate) fn py_fsum(items: impl IntoIterator<Item = f64>) -> f64 {
    py_sum(items.into_iter().map(PyNum::Float)).as_f64()
}

/// Python's `round(x, ndigits)` for `0 <= ndigits <= 15`: the double nearest
/// to the decimal obtained by rounding the exact binary value of `x` to
/// `ndigits` places, ties to even, keeping the sign of a zero result.
pub(crate) fn py_round(x: f64, ndigits: i32) -> f64 {
    debug_assert!((0..=15).contains(&ndigits));
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    // 10^ndigits, exact for ndigits <= 22.
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let pow = POW10[ndigits.clamp(0, 15) as usize];
    let y = x * pow;
    if !y.is_finite() || y.abs() >= 4_503_599_627_370_496.0 {
        // |x * 10^n| >= 2^52: x already has no digits beyond the n-th.
        return x;
    }
    let fl = y.floor();
    let a = y - fl; // exact: the fractional part of a double below 2^52
    let r = if (a - 0.5).abs() > 1e-6 {
        // Far from a tie: the rounding error of `x * pow` (at most half an
        // ulp of y, far below 1e-6 here) cannot change the answer.
        if a < 0.5 { fl } else { fl + 1.0 }
    } else {
        // Near a tie: the exact product is y + e (fma gives e exactly).
        let e = x.mul_add(pow, -y);
        // The exact fractional part is a + e; compare it with 1/2 exactly.
        // a is within 1e-6 of 0.5, so a - 0.5 is exact (Sterbenz).
        let d = a - 0.5;
        // Above the tie, or exactly on it with an odd floor (ties to even).
        let up = d > -e || (d == -e && fl % 2.0 != 0.0);
        if up { fl + 1.0 } else { fl }
    };
    // r and pow are exact, so IEEE division gives the double nearest to the
    // decimal r / 10^n, which is what Python's strtod step returns.
    (r / pow).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_matches_python_312_examples() {
        // Values printed by CPython 3.12.1.
        assert_eq!(py_fsum([0.1, 0.2, 0.3]), 0.6);
        assert_eq!(0.1 + 0.2 + 0.3, 0.6000000000000001);
        assert_eq!(py_fsum([1e100, 1.0, -1e100, 1e-100]), 1.0);
        assert_eq!(py_fsum([-1.2, -1.5, 2.7]), 2.220446049250313e-16);
        assert_eq!(py_sum([PyNum::Int(0), PyNum::Int(3)]), PyNum::Int(3));
        assert_eq!(py_sum([]), PyNum::Int(0));
        // 0 + -0.0 is 0.0 in Python.
        assert!(py_fsum([-0.0]).is_sign_positive());
    }

    #[test]
    fn round_matches_python_on_ties_and_random_values() {
        // Dyadic fractions (exact ties at 3 and 4 decimals) and random values.
        let cases = include_str!("../../tests/fixtures/pyfloat/round_cases.tsv");
        let mut checked = 0;
        for line in cases.lines().filter(|l| !l.starts_with('#')) {
            let v: Vec<f64> = line.split('\t').map(|f| f.parse().unwrap()).collect();
            assert_eq!(py_round(v[0], 3).to_bits(), v[1].to_bits(), "round({}, 3)", v[0]);
            assert_eq!(py_round(v[0], 4).to_bits(), v[2].to_bits(), "round({}, 4)", v[0]);
            checked += 1;
        }
        assert_eq!(checked, 311);
    }

    #[test]
    fn round_matches_python() {
        // (x, ndigits, round(x, ndigits)) printed by CPython 3.12.1.
        let cases: &[(f64, i32, f64)] = &[
            (0.0625, 3, 0.062),
            (0.1875, 3, 0.188),
            (2.675, 2, 2.67),
            (0.5, 0, 0.0),
            (1.5, 0, 2.0),
            (2.5, 0, 2.0),
            (-0.0001, 3, -0.0),
            (0.12345, 4, 0.1235),
            (-0.30845, 4, -0.3085),
            (0.6666666666666666, 3, 0.667),
            (1.0, 4, 1.0),
            (-0.99999, 4, -1.0),
        ];
        for &(x, n, want) in cases {
            let got = py_round(x, n);
            assert_eq!(got.to_bits(), want.to_bits(), "round({x}, {n}) = {got}, want {want}");
        }
    }
}
