//! Owned instruments (`cluster.instruments`, issue 21): an engine node that owns a
//! subset of the instruments behaves exactly like one that owns all of them for
//! orders on its own instruments, and refuses everything that names another one
//! (new, test, replace and instrument mass cancel) with
//! `INSTRUMENT_NOT_ON_THIS_ENGINE`, changing nothing but the event sequence.
//! Generated command streams run against both.

use crate::orders_common;

use orders_common::*;
use proptest::prelude::*;
use stocksblitz_engine::orders::{CommandKind, OrderEvent, OrderEventData, OrderType, Reject, TimeInForce};
use stocksblitz_engine::{InstrumentId, Price, Qty, Side, UnixNanos};

#[derive(Debug, Clone)]
enum Op {
    New {
        instrument: u32,
        buy: bool,
        market: bool,
        offset: i64,
        qty: i64,
        test: bool,
    },
    Cancel(usize),
    Replace {
        pick: usize,
        qty: i64,
        offset: i64,
    },
    MassCancel(Option<u32>),
    Quote(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3u32, any::<bool>(), prop::bool::weighted(0.2), -5..5i64, 1..10i64, prop::bool::weighted(0.1))
            .prop_map(|(instrument, buy, market, offset, qty, test)| Op::New { instrument, buy, market, offset, qty, test }),
        2 => any::<usize>().prop_map(Op::Cancel),
        2 => (any::<usize>(), 1..12i64, -5..5i64).prop_map(|(pick, qty, offset)| Op::Replace { pick, qty, offset }),
        1 => prop::option::of(0..3u32).prop_map(Op::MassCancel),
        1 => (-3..3i64).prop_map(Op::Quote),
    ]
}

const MID: i64 = 10_000;
/// The instrument the sharded engine does not own.
const OTHERS: InstrumentId = NSE;

/// Events without their sequence numbers (the sharded engine's rejections take some).
fn unsequenced(events: &[OrderEvent]) -> Vec<OrderEvent> {
    events.iter().map(|e| OrderEvent { seq: 0, ..*e }).collect()
}

fn not_this_engines(events: &[OrderEvent]) -> bool {
    matches!(
        events,
        [OrderEvent {
            data: OrderEventData::Rejected {
                reject: Reject::InstrumentNotOnThisEngine,
                ..
            },
            last: true,
            ..
        }]
    )
}

fn run_stream(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut all = manager(2);
    let mut some = manager(2);
    some.set_owned(Some(&[INTERNAL, PAPER]));
    prop_assert_eq!(some.owned(), Some(vec![INTERNAL, PAPER]));
    for (n, op) in ops.iter().enumerate() {
        let at = n as i64 * 1_000_000;
        let (kind, foreign) = match *op {
            Op::New {
                instrument,
                buy,
                market,
                offset,
                qty,
                test,
            } => {
                let instrument = InstrumentId(instrument);
                let side = if buy { Side::Buy } else { Side::Sell };
                let client = format!("c{n}");
                let mut o = if market {
                    new_order(instrument, &client, side, OrderType::Market, TimeInForce::Ioc, 0, qty)
                } else {
                    limit(instrument, &client, side, MID + offset, qty)
                };
                if instrument == NSE {
                    // Lots of 5 on the equity.
                    o.qty = Qty(qty * 5);
                }
                let kind = if test {
                    CommandKind::Test(o)
                } else {
                    CommandKind::New(o)
                };
                (kind, instrument == OTHERS)
            }
            Op::Cancel(pick) | Op::Replace { pick, .. } => {
                let open: Vec<_> = some.open_orders().map(|o| o.id).collect();
                let Some(order) = open.get(pick % open.len().max(1)).copied() else {
                    continue;
                };
                let kind = match *op {
                    Op::Replace { qty, offset, .. } => CommandKind::Replace {
                        order,
                        qty: Some(Qty(qty)),
                        price: Some(Price(MID + offset)),
                    },
                    _ => CommandKind::Cancel { order },
                };
                (kind, false)
            }
            Op::MassCancel(i) => {
                let instrument = i.map(InstrumentId);
                (CommandKind::MassCancel { instrument }, instrument == Some(OTHERS))
            }
            Op::Quote(offset) => {
                for m in [&mut all, &mut some] {
                    m.clear();
                    let (bid, ask) = (Price(MID + offset - 1), Price(MID + offset + 1));
                    m.on_quote(PAPER, bid, Qty(4), ask, Qty(4), UnixNanos(T0 + at));
                }
                prop_assert_eq!(unsequenced(all.events()), unsequenced(some.events()));
                continue;
            }
        };
        let open_before: Vec<_> = some.open_orders().copied().collect();
        let events = run(&mut some, (n % 2) as u32, at, kind);
        if foreign {
            prop_assert!(not_this_engines(&events), "{:?}: {:?}", op, events);
            let open_after: Vec<_> = some.open_orders().copied().collect();
            prop_assert_eq!(open_after, open_before, "a refused command changes no order");
        } else {
            let expected = run(&mut all, (n % 2) as u32, at, kind);
            prop_assert_eq!(unsequenced(&events), unsequenced(&expected), "{:?}", op);
        }
    }
    let (a, b): (Vec<_>, Vec<_>) = (
        all.open_orders().copied().collect(),
        some.open_orders().copied().collect(),
    );
    prop_assert_eq!(a, b);
    for account in 0..2 {
        for i in [INTERNAL, PAPER] {
            let account = stocksblitz_engine::orders::AccountId(account);
            prop_assert_eq!(all.position(account, i), some.position(account, i));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn owned_instruments_trade_as_before_and_others_are_refused(ops in prop::collection::vec(op(), 1..100)) {
        run_stream(&ops)?;
    }
}

#[test]
fn a_foreign_order_is_refused_first_and_says_where_to_send_it() {
    let mut m = manager(1);
    m.set_owned(Some(&[INTERNAL]));
    assert!(m.owns(INTERNAL) && !m.owns(PAPER));
    // Wrong in every other way too: the ownership check comes first.
    let mut bad = limit(PAPER, "x", Side::Buy, 1, -1);
    bad.tif = TimeInForce::Fok;
    let events = run(&mut m, 0, 0, CommandKind::New(bad));
    assert_eq!(rejection(&events), Some("INSTRUMENT_NOT_ON_THIS_ENGINE"));
    assert!(Reject::InstrumentNotOnThisEngine.message().contains("API node"));
    // An unknown instrument is still unknown.
    let events = run(
        &mut m,
        0,
        0,
        CommandKind::New(limit(InstrumentId(9), "y", Side::Buy, MID, 1)),
    );
    assert_eq!(rejection(&events), Some("UNKNOWN_INSTRUMENT"));
    // A cancel of an open order on an instrument no longer owned still works; a
    // replace of it does not.
    m.set_owned(None);
    let id = accepted_id(&run(
        &mut m,
        0,
        0,
        CommandKind::New(limit(PAPER, "z", Side::Buy, MID - 50, 1)),
    ))
    .expect("placed");
    m.set_owned(Some(&[INTERNAL]));
    let replace = CommandKind::Replace {
        order: id,
        qty: Some(Qty(2)),
        price: None,
    };
    assert_eq!(
        rejection(&run(&mut m, 0, 1, replace)),
        Some("INSTRUMENT_NOT_ON_THIS_ENGINE")
    );
    let events = run(&mut m, 0, 2, CommandKind::Cancel { order: id });
    assert_eq!(rejection(&events), None, "{events:?}");
    assert_eq!(m.open_orders().count(), 0);
    // Mass cancel of all the account's orders is not an instrument's.
    let events = run(&mut m, 0, 3, CommandKind::MassCancel { instrument: None });
    assert_eq!(rejection(&events), None);
}

/// The ownership check is an index into a preallocated table: no allocation.
#[test]
fn refusing_a_foreign_order_allocates_nothing() {
    let mut m = manager(1);
    m.set_owned(Some(&[INTERNAL]));
    let order = limit(PAPER, "x", Side::Buy, MID, 1);
    // Warm up (the event buffers are preallocated; the first step may size them).
    run(&mut m, 0, 0, CommandKind::New(order));
    let cmd = stocksblitz_engine::orders::Command {
        request: 2,
        account: stocksblitz_engine::orders::AccountId(0),
        at: UnixNanos(T0 + 1),
        kind: CommandKind::New(order),
        idempotency: None,
    };
    m.clear();
    let ((), n) = stocksblitz_testkit::alloc::count_allocations(|| m.handle(&cmd));
    assert_eq!(n, 0, "allocations while refusing");
    assert_eq!(rejection(m.events()), Some("INSTRUMENT_NOT_ON_THIS_ENGINE"));
}

/// Snapshots carry the owned set only when it is not all: an image of an engine that
/// owns all is byte for byte what it always was, and one that owns some restores it.
#[test]
fn images_carry_the_owned_set_only_when_not_all() {
    let plain = manager(1);
    let mut owning_all = manager(1);
    owning_all.set_owned(Some(&[INTERNAL, PAPER, NSE]));
    assert_eq!(owning_all.owned(), None, "listing every instrument is owning all");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    plain.encode_image(&mut a).expect("encode");
    owning_all.encode_image(&mut b).expect("encode");
    assert_eq!(a, b);
    assert_eq!(plain.state_hash(), owning_all.state_hash());

    let mut some = manager(1);
    some.set_owned(Some(&[PAPER]));
    let mut image = Vec::new();
    some.encode_image(&mut image).expect("encode");
    assert!(
        image.len() > a.len() && image.starts_with(&a),
        "the set follows the unchanged image"
    );
    assert_ne!(some.state_hash(), plain.state_hash(), "the set is in the state hash");
    let mut restored = manager(1);
    restored.restore_image(&image).expect("restores");
    assert_eq!(restored.owned(), Some(vec![PAPER]));
    assert_eq!(restored.state_hash(), some.state_hash());
    // And an image without the set restores owning all.
    restored.restore_image(&a).expect("restores");
    assert_eq!(restored.owned(), None);
    // A set naming an instrument this configuration lacks is refused.
    let mut bad = a.clone();
    postcard::to_io(&vec![InstrumentId(7)], &mut bad).expect("encode");
    assert!(restored.restore_image(&bad).is_err());
}
