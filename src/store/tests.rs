//! The store's rules: appends as Prometheus's head takes them, selections, retention, and
//! what each series costs.

use super::*;
use crate::promql::MatchKind;

fn l(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn hash_labels(labels: &Labels) -> u64 {
    hash_pairs(MergedPairs::new(labels, [("", "", 0); 3]))
}

#[test]
fn append_rules_follow_prometheus_head() {
    let s = Store::new(0);
    let a = l(&[("__name__", "up"), ("job", "a")]);
    assert_eq!(s.append(&a, 1000, 1.0), Ok(()));
    assert_eq!(
        s.append(&a, 1000, 1.0),
        Ok(()),
        "identical duplicate is ignored"
    );
    assert_eq!(s.append(&a, 1000, 2.0), Err(AppendError::Duplicate));
    assert_eq!(s.append(&a, 999, 2.0), Err(AppendError::OutOfOrder));
    assert_eq!(s.append(&a, 2000, 3.0), Ok(()));
    let got = s
        .select(
            &[LabelMatcher::new("job", MatchKind::Equal, "a").expect("m")],
            0,
            5000,
        )
        .expect("select");
    assert_eq!(got[0].samples, vec![(1000, 1.0), (2000, 3.0)]);
}

fn batch(job: &str, instance: &str, samples: &[(&str, Labels, i64, f64)]) -> Metrics {
    use crate::model::{MetricFamily, MetricKind, ResourceMetrics, Sample};
    let mut resource = vec![("service.name".to_string(), job.to_string())];
    if !instance.is_empty() {
        resource.push(("service.instance.id".into(), instance.into()));
    }
    Metrics {
        resources: vec![ResourceMetrics {
            resource,
            scope_name: String::new(),
            scope_version: String::new(),
            families: vec![MetricFamily {
                name: "f".into(),
                kind: MetricKind::Gauge,
                help: "".into(),
                unit: "".into(),
                samples: samples
                    .iter()
                    .map(|(name, labels, t, v)| Sample {
                        name: (*name).into(),
                        labels: labels.clone(),
                        value: *v,
                        timestamp_ms: *t,
                    })
                    .collect(),
            }],
        }],
    }
}

#[test]
fn merged_pairs_are_the_label_set_from_vec_builds() {
    let cases = [
        (l(&[("a", "1"), ("z", "2")]), "m", "i:1", "j"),
        (l(&[]), "m", "", "j"),
        (
            l(&[("A", "x"), ("_b", "y"), ("instancf", "z")]),
            "m",
            "i",
            "",
        ),
        // A sample label named like a resource one loses to it, as in `from_vec`.
        (l(&[("job", "shadowed"), ("k", "v")]), "m", "i", "j"),
        (l(&[("job", "kept")]), "m", "i", ""),
    ];
    for (labels, name, instance, job) in cases {
        let mut v = labels.to_vec();
        for (k, val) in [("__name__", name), ("job", job), ("instance", instance)] {
            if !val.is_empty() {
                v.push(Label::new(k, val));
            }
        }
        let built = Labels::from_vec(v);
        let extra = [("__name__", name), ("instance", instance), ("job", job)]
            .map(|(k, v)| (k, v, crate::model::pair_hash(k, v)));
        let merged: Vec<(&str, &str)> = MergedPairs::new(&labels, extra).collect();
        let want: Vec<(&str, &str)> = built.iter().map(|l| (&*l.name, &*l.value)).collect();
        assert_eq!(merged, want, "{labels}");
        assert_eq!(
            hash_pairs(MergedPairs::new(&labels, extra)),
            hash_labels(&built)
        );
    }
}

#[test]
fn pipeline_samples_and_full_label_sets_are_one_series() {
    let s = Store::new(0);
    let sample_labels = l(&[("code", "200")]);
    for t in [1000, 2000] {
        let m = batch(
            "mesh",
            "10.0.0.1:15090",
            &[("req_total", sample_labels.clone(), t, 1.0)],
        );
        assert_eq!(s.append_metrics(&m), 1);
    }
    let full = l(&[
        ("__name__", "req_total"),
        ("code", "200"),
        ("instance", "10.0.0.1:15090"),
        ("job", "mesh"),
    ]);
    assert_eq!(s.append(&full, 3000, 2.0), Ok(()));
    assert_eq!(s.series_count(), 1);
    let got = s
        .select(
            &[LabelMatcher::new("code", MatchKind::Equal, "200").expect("m")],
            0,
            5000,
        )
        .expect("select");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels, full);
    assert_eq!(got[0].samples, vec![(1000, 1.0), (2000, 1.0), (3000, 2.0)]);
    // The stored series holds the sample's own label set, not a copy.
    let shard = s.shards.iter().find_map(|sh| {
        let sh = sh.read().expect("lock");
        sh.slots.iter().flatten().next().map(|x| x.labels.clone())
    });
    let held = shard.expect("one series");
    assert!(held.ptr_eq(&sample_labels));

    // A sample label named like the resource's loses to it, as in a built set.
    let odd = l(&[("job", "from-sample"), ("k", "v")]);
    let m = batch("mesh", "", &[("odd", odd, 1000, 5.0)]);
    assert_eq!(s.append_metrics(&m), 1);
    let job = LabelMatcher::new("job", MatchKind::Equal, "mesh").expect("m");
    let k = LabelMatcher::new("k", MatchKind::Equal, "v").expect("m");
    let got = s.select(&[job, k], 0, 5000).expect("select");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].labels,
        l(&[("__name__", "odd"), ("job", "mesh"), ("k", "v")])
    );
    let shadowed = LabelMatcher::new("job", MatchKind::Equal, "from-sample").expect("m");
    assert!(s.select(&[shadowed], 0, 5000).expect("select").is_empty());

    // The answer's label set is merged in name order around the three kept apart.
    let around = l(&[("A", "x"), ("_b", "y"), ("instancf", "z"), ("zz", "w")]);
    let m = batch("mesh", "i:1", &[("around", around.clone(), 1000, 6.0)]);
    assert_eq!(s.append_metrics(&m), 1);
    let zz = LabelMatcher::new("zz", MatchKind::Equal, "w").expect("m");
    let got = s.select(&[zz], 0, 5000).expect("select");
    let mut want = around.to_vec();
    for (k, v) in [("__name__", "around"), ("instance", "i:1"), ("job", "mesh")] {
        want.push(Label::new(k, v));
    }
    assert_eq!(got[0].labels, Labels::from_vec(want));
}

/// A batch is appended shard by shard, yet reads as if appended sample by sample: new
/// series in the batch's order, one series' samples in theirs, the counts all there.
#[test]
fn a_batch_reads_as_appended_in_its_order() {
    let s = Store::new(0);
    let mut samples = Vec::new();
    for i in 0..200 {
        samples.push(("up", l(&[("i", &i.to_string())]), 1000, i as f64));
    }
    // The same series again, later and then earlier (refused), and a duplicate.
    samples.push(("up", l(&[("i", "7")]), 2000, 1.0));
    samples.push(("up", l(&[("i", "7")]), 1500, 1.0));
    samples.push(("up", l(&[("i", "8")]), 1000, 99.0));
    let m = batch("mesh", "i:1", &samples);
    assert_eq!(s.append_metrics(&m), 201);
    assert_eq!(s.stats.appended.load(Ordering::Relaxed), 201);
    assert_eq!(s.stats.out_of_order.load(Ordering::Relaxed), 1);
    assert_eq!(s.stats.duplicates.load(Ordering::Relaxed), 1);
    let up = LabelMatcher::new("__name__", MatchKind::Equal, "up").expect("m");
    let got = s.select(&[up], 0, 5000).expect("select");
    let order: Vec<String> = got
        .iter()
        .map(|x| x.labels.get("i").unwrap_or("").to_string())
        .collect();
    let want: Vec<String> = (0..200).map(|i: i32| i.to_string()).collect();
    assert_eq!(order, want, "creation order is the batch's");
    assert_eq!(got[7].samples, vec![(1000, 7.0), (2000, 1.0)]);
    assert_eq!(got[8].samples, vec![(1000, 8.0)]);
    // A second batch finds the same series (no new ones), by label set alone.
    let again: Vec<_> = (0..200)
        .map(|i| ("up", l(&[("i", &i.to_string())]), 3000, 0.0))
        .collect();
    assert_eq!(s.append_metrics(&batch("mesh", "i:1", &again)), 200);
    assert_eq!(s.series_count(), 200);
}

/// A target's next batch finds its series where the last one's samples went, checked by
/// label-set identity: whatever the order, and after their slots went to other series.
#[test]
fn a_targets_next_batch_finds_its_series_where_they_were() {
    let s = Store::new(0);
    let sets: Vec<Labels> = (0..10).map(|i| l(&[("i", &i.to_string())])).collect();
    let send = |instance: &str, t: i64, order: &[usize]| {
        let samples: Vec<_> = order
            .iter()
            .map(|&i| ("up", sets[i].clone(), t, (i as i64 * 1000 + t) as f64))
            .collect();
        s.append_metrics(&batch("mesh", instance, &samples))
    };
    let forward: Vec<usize> = (0..10).collect();
    let backward: Vec<usize> = (0..10).rev().collect();
    assert_eq!(send("i:1", 1000, &forward), 10);
    assert_eq!(send("i:1", 2000, &forward), 10);
    assert_eq!(send("i:1", 3000, &backward), 10);
    // Same sample labels, another target: other series.
    assert_eq!(send("i:2", 3000, &forward), 10);
    assert_eq!(s.series_count(), 20);
    let i1 = LabelMatcher::new("instance", MatchKind::Equal, "i:1").expect("m");
    for x in s
        .select(std::slice::from_ref(&i1), 0, 10_000)
        .expect("select")
    {
        let i: i64 = x.labels.get("i").unwrap_or("").parse().expect("i");
        let want: Vec<(i64, f64)> = [1000, 2000, 3000]
            .iter()
            .map(|&t| (t, (i * 1000 + t) as f64))
            .collect();
        assert_eq!(x.samples, want, "series i={i}");
    }
    // The target's series go away and their slots go to others; its next batch must
    // not land in them.
    s.trim(5000);
    assert_eq!(s.series_count(), 0);
    for i in 0..20 {
        let other = l(&[("__name__", "other"), ("k", &i.to_string())]);
        assert_eq!(s.append(&other, 6000, 1.0), Ok(()));
    }
    assert_eq!(send("i:1", 7000, &forward), 10);
    assert_eq!(s.series_count(), 30);
    let got = s.select(&[i1], 0, 10_000).expect("select");
    assert_eq!(got.len(), 10);
    for x in &got {
        assert_eq!(x.labels.get("__name__"), Some("up"));
        assert_eq!(x.samples.len(), 1);
    }
    let other = LabelMatcher::new("__name__", MatchKind::Equal, "other").expect("m");
    for x in s.select(&[other], 0, 10_000).expect("select") {
        assert_eq!(x.samples, vec![(6000, 1.0)]);
    }
}

/// Pushes of made-up targets with huge batches cannot make the store keep their
/// positions beyond a bound set by the series it holds.
#[test]
fn positions_of_made_up_targets_stay_bounded() {
    let s = Store::new(10);
    let sets: Vec<Labels> = (0..2_000).map(|i| l(&[("i", &i.to_string())])).collect();
    for target in 0..60 {
        let samples: Vec<_> = sets.iter().map(|x| ("up", x.clone(), 1000, 1.0)).collect();
        s.append_metrics(&batch("push", &format!("made-up-{target}"), &samples));
    }
    assert_eq!(s.series_count(), 10);
    let held = s.positions.held();
    assert!(held <= 2 * 10 + 65_536, "{held} positions held");
    assert!(held > 0, "the first targets' positions are kept");
}

#[test]
fn freed_ids_are_reused_and_selections_keep_creation_order() {
    let s = Store::new(0);
    // Enough series that every shard holds several, then the oldest go away.
    for i in 0..64 {
        let labels = l(&[("__name__", "up"), ("i", &i.to_string())]);
        assert_eq!(s.append(&labels, 1000 + i, 1.0), Ok(()));
    }
    for i in 0..32 {
        let labels = l(&[("__name__", "up"), ("i", &i.to_string())]);
        assert_eq!(s.append(&labels, 100_000 + i, 1.0), Ok(()));
    }
    // Which shard a series lands in follows the per-process hash seed, so slot counts are
    // checked shard by shard.
    let slot_counts = || -> Vec<(usize, usize)> {
        s.shards
            .iter()
            .map(|sh| {
                let sh = sh.read().expect("lock");
                (sh.slots.len(), sh.slots.iter().flatten().count())
            })
            .collect()
    };
    let before = slot_counts();
    s.trim(50_000);
    assert_eq!(s.series_count(), 32);
    for i in 64..96 {
        let labels = l(&[("__name__", "up"), ("i", &i.to_string())]);
        assert_eq!(s.append(&labels, 200_000, 1.0), Ok(()));
    }
    assert_eq!(s.series_count(), 64);
    // A shard grows only by the new series its freed slots could not take.
    for (shard, ((had, _), (has, live))) in before.into_iter().zip(slot_counts()).enumerate() {
        assert_eq!(
            has,
            had.max(live),
            "shard {shard}: {has} slots for {live} series (it had {had}): freed ones were not reused"
        );
    }
    let up = LabelMatcher::new("__name__", MatchKind::Equal, "up").expect("m");
    let order: Vec<String> = s
        .select(&[up], 0, 300_000)
        .expect("select")
        .iter()
        .map(|x| x.labels.get("i").unwrap_or("").to_string())
        .collect();
    let want: Vec<String> = (0..32).chain(64..96).map(|i: i32| i.to_string()).collect();
    assert_eq!(order, want);
    // Postings stayed sorted: an equality match on a reused id still finds it.
    for i in [0, 31, 64, 95] {
        let m = LabelMatcher::new("i", MatchKind::Equal, &i.to_string()).expect("m");
        assert_eq!(
            s.select(&[m], 0, 300_000).expect("select").len(),
            1,
            "i={i}"
        );
    }
}

/// What every series costs before its samples: a window of 111,200 series holds one of
/// each per series, and a closed chunk per 120 samples.
#[test]
fn per_series_structures_stay_small() {
    assert_eq!(std::mem::size_of::<ClosedChunk>(), 24);
    assert_eq!(std::mem::size_of::<HeadChunk>(), 40);
    assert_eq!(std::mem::size_of::<Option<MemSeries>>(), 120);
}

/// A series' samples read the same across closed chunks and the one being appended to;
/// retention drops a closed chunk once its last sample is old, and the series once the
/// chunk being appended to is old too.
#[test]
fn samples_cross_chunks_and_retention_drops_whole_old_chunks() {
    let s = Store::new(0);
    let series = l(&[("__name__", "x"), ("job", "a")]);
    let value = |i: i64| {
        if i % 7 == 0 {
            i as f64 * 1.5
        } else {
            (i / 3) as f64
        }
    };
    for i in 1..=250 {
        s.append(&series, i * 1000, value(i)).expect("append");
    }
    let m = LabelMatcher::new("job", MatchKind::Equal, "a").expect("m");
    let read = |mint: i64, maxt: i64| -> Vec<(i64, f64)> {
        let mut got = s
            .select(std::slice::from_ref(&m), mint, maxt)
            .expect("select");
        got.pop().map(|x| x.samples).unwrap_or_default()
    };
    let want = |from: i64, to: i64| -> Vec<(i64, f64)> {
        (from..=to).map(|i| (i * 1000, value(i))).collect()
    };
    assert_eq!(read(0, i64::MAX), want(1, 250));
    // Across the first chunk's end (120 samples) and into the open one (from 241).
    assert_eq!(read(100_500, 130_000), want(101, 130));
    assert_eq!(read(239_000, 245_000), want(239, 245));
    assert!(s.chunk_bytes() > 0);
    s.trim(120_001);
    assert_eq!(read(0, i64::MAX), want(121, 250));
    // The second chunk's last sample (240 s) is not older than the bound: kept whole.
    s.trim(240_000);
    assert_eq!(read(0, i64::MAX), want(121, 250));
    s.trim(250_001);
    assert_eq!((s.series_count(), s.chunk_bytes()), (0, 0));
    s.append(&series, 260_000, 1.0).expect("append");
    assert_eq!(read(0, i64::MAX), vec![(260_000, 1.0)]);
}

#[test]
fn postings_regex_and_retention() {
    let s = Store::new(2);
    for (i, job) in ["a", "b", "c"].iter().enumerate() {
        let r = s.append(
            &l(&[("__name__", "up"), ("job", job)]),
            1000 * (i as i64 + 1),
            1.0,
        );
        assert_eq!(r.is_ok(), i < 2, "the third series exceeds max_series");
    }
    let re = LabelMatcher::new("job", MatchKind::Re, "a|b").expect("m");
    assert_eq!(s.select(&[re], 0, 10_000).expect("select").len(), 2);
    let ne = LabelMatcher::new("job", MatchKind::NotEqual, "a").expect("m");
    assert_eq!(s.select(&[ne], 0, 10_000).expect("select").len(), 1);
    s.trim(1500);
    assert_eq!(s.series_count(), 1);
    let all = LabelMatcher::new("__name__", MatchKind::Equal, "up").expect("m");
    assert_eq!(s.select(&[all], 0, 10_000).expect("select").len(), 1);
}
