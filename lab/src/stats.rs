//! The statistics of repeated runs: mean, sample standard deviation, the
//! 95% confidence interval of the mean (Student's t), and Welch's t-test for
//! two sets of runs. The distributions come from `statrs`.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// One figure over the repeated runs of one combination.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1 in the denominator); `None` below two values.
    pub sd: Option<f64>,
    /// Half-width of the 95% confidence interval of the mean,
    /// t(0.975, n - 1) * sd / sqrt(n); `None` below two values.
    pub ci95: Option<f64>,
}

/// Mean, standard deviation and 95% confidence interval of `values`;
/// `None` for no values.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Some(Summary {
            n,
            mean,
            sd: None,
            ci95: None,
        });
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let sd = var.sqrt();
    let ci95 = t_quantile(0.975, (n - 1) as f64) * sd / (n as f64).sqrt();
    Some(Summary {
        n,
        mean,
        sd: Some(sd),
        ci95: Some(ci95),
    })
}

/// The `p` quantile of Student's t distribution with `df` degrees of freedom.
pub fn t_quantile(p: f64, df: f64) -> f64 {
    StudentsT::new(0.0, 1.0, df)
        .expect("degrees of freedom are positive")
        .inverse_cdf(p)
}

/// The outcome of Welch's unequal-variances t-test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Welch {
    /// The t statistic, (mean_a - mean_b) / sqrt(var_a/n_a + var_b/n_b).
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p: f64,
}

impl Welch {
    /// Whether the difference is significant at the 95% level.
    pub fn significant(&self) -> bool {
        self.p < 0.05
    }
}

/// Welch's two-sided t-test of `a` against `b`. `None` when either side
/// has fewer than two values, or both have no variance (then there is
/// nothing to test: equal means are the same, different ones differ
/// without doubt and the caller says so).
pub fn welch(a: &[f64], b: &[f64]) -> Option<Welch> {
    let (sa, sb) = (summarize(a)?, summarize(b)?);
    let (va, vb) = (sa.sd?.powi(2), sb.sd?.powi(2));
    let (na, nb) = (sa.n as f64, sb.n as f64);
    let se2 = va / na + vb / nb;
    if se2 == 0.0 {
        return None;
    }
    let t = (sa.mean - sb.mean) / se2.sqrt();
    let df = se2.powi(2) / ((va / na).powi(2) / (na - 1.0) + (vb / nb).powi(2) / (nb - 1.0));
    let dist = StudentsT::new(0.0, 1.0, df).expect("degrees of freedom are positive");
    let p = 2.0 * (1.0 - dist.cdf(t.abs()));
    Some(Welch { t, df, p })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// Critical values from the standard t table (e.g. NIST/SEMATECH
    /// e-Handbook of Statistical Methods, table 1.3.6.7.2).
    #[test]
    fn t_quantiles_match_the_table() {
        for (p, df, want) in [
            (0.975, 1.0, 12.706),
            (0.975, 4.0, 2.776),
            (0.975, 9.0, 2.262),
            (0.975, 30.0, 2.042),
            (0.95, 10.0, 1.812),
        ] {
            let got = t_quantile(p, df);
            assert!(
                close(got, want, 0.0005),
                "t({p}, {df}) = {got}, table {want}"
            );
        }
        // More digits, as R's qt(0.975, 4) prints them.
        assert!(close(t_quantile(0.975, 4.0), 2.776445, 1e-6));
    }

    /// R's `sleep` data set and `t.test(extra ~ group, data = sleep)`
    /// (Welch is R's default): t = -1.8608, df = 17.776,
    /// p-value = 0.07939, mean of x 0.75, mean of y 2.33.
    #[test]
    fn welch_matches_r_sleep_example() {
        let g1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0];
        let g2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4];
        let w = welch(&g1, &g2).unwrap();
        assert!(close(w.t, -1.8608, 0.00005), "t = {}", w.t);
        assert!(close(w.df, 17.776, 0.0005), "df = {}", w.df);
        assert!(close(w.p, 0.07939, 0.000005), "p = {}", w.p);
        assert!(!w.significant());
        assert!(close(summarize(&g1).unwrap().mean, 0.75, 1e-12));
        assert!(close(summarize(&g2).unwrap().mean, 2.33, 1e-12));
    }

    /// The examples of R's `?t.test` page: `t.test(1:10, y = c(7:20))`
    /// gives P = .00001855 (significant); one outlier more,
    /// `t.test(1:10, y = c(7:20, 200))`, gives P = .1245 (not significant
    /// any more: the outlier inflates the variance).
    #[test]
    fn welch_matches_r_t_test_examples() {
        let x: Vec<f64> = (1..=10).map(f64::from).collect();
        let mut y: Vec<f64> = (7..=20).map(f64::from).collect();
        let w = welch(&x, &y).unwrap();
        assert!(close(w.p, 0.00001855, 0.000000005), "p = {}", w.p);
        assert!(w.significant());
        y.push(200.0);
        let w = welch(&x, &y).unwrap();
        assert!(close(w.p, 0.1245, 0.00005), "p = {}", w.p);
        assert!(!w.significant());
    }

    /// mean, sd and the interval of 1..=5 worked by hand: mean 3,
    /// sd sqrt(2.5), ci95 2.776445 * sqrt(2.5) / sqrt(5).
    #[test]
    fn summary_of_one_to_five() {
        let s = summarize(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!(s.n, 5);
        assert!(close(s.mean, 3.0, 1e-12));
        assert!(close(s.sd.unwrap(), 2.5f64.sqrt(), 1e-12));
        assert!(close(s.ci95.unwrap(), 2.776445 * 0.5f64.sqrt(), 1e-6));
        let one = summarize(&[7.0]).unwrap();
        assert_eq!((one.n, one.mean, one.sd, one.ci95), (1, 7.0, None, None));
        assert!(summarize(&[]).is_none());
        assert!(welch(&[1.0, 1.0], &[1.0, 1.0]).is_none());
    }
}
