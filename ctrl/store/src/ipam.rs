//! IP address management with group commit.
//!
//! Correctness never rests on memory: `UNIQUE (cvlan_id, host_offset)` forbids a duplicate on
//! both backends, and every allocation transaction first bumps the CVLAN's `alloc_version`
//! (a row write that serialises allocators of one CVLAN across processes and replicas). The
//! in-memory bitmap is only a cache, trusted when the version it saw is exactly the one before
//! ours, reloaded otherwise.
//!
//! Speed comes from batching: concurrent requests for one CVLAN queue up, and one background
//! task turns each queue drain into a single transaction (one version bump, one multi-row
//! insert of addresses, one of audit events, one commit).
//!
//! A CVLAN's host offset `k` maps to `ipv4_prefix + k` and `ipv6_prefix + k`: one reservation
//! holds one address of each family.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use cvlan_proto::v1 as pb;
use ipnet::{Ipv4Net, Ipv6Net};
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::oneshot;

use crate::audit::{self, AuditRecord};
use crate::{Result, Store, StoreError, entity, time};

/// Most requests folded into one transaction (bounded by bind-parameter limits).
const MAX_BATCH: usize = 256;

/// One allocation request.
#[derive(Debug, Clone)]
pub struct AllocRequest {
    /// Owning tenant id.
    pub tenant_id: String,
    /// CVLAN id.
    pub cvlan_id: String,
    /// A specific address (IPv4 or IPv6 of the CVLAN), or the lowest free one.
    pub requested: Option<IpAddr>,
    /// Node the address belongs to, if any.
    pub node_id: String,
    /// Free text.
    pub description: String,
    /// Who asked, for the audit event written in the same transaction.
    pub audit: AuditRecord,
}

struct Pending {
    req: AllocRequest,
    reply: oneshot::Sender<Result<pb::AddressReservation>>,
}

#[derive(Default)]
struct Queue {
    items: Vec<Pending>,
    running: bool,
}

struct Cache {
    version: i64,
    v4: Ipv4Net,
    v6: Option<Ipv6Net>,
    used: Bitmap,
}

#[derive(Default)]
struct CvlanState {
    queue: Mutex<Queue>,
    cache: tokio::sync::Mutex<Option<Cache>>,
}

/// The allocator: per-CVLAN queues and caches.
#[derive(Default)]
pub struct Ipam {
    cvlans: Mutex<HashMap<String, Arc<CvlanState>>>,
}

/// Fixed-size bitmap of used host offsets with a lowest-free hint.
#[derive(Debug, Clone)]
pub struct Bitmap {
    words: Vec<u64>,
    len: u64,
    hint: usize,
}

impl Bitmap {
    /// `len` bits, all free.
    pub fn new(len: u64) -> Self {
        Bitmap {
            words: vec![0; len.div_ceil(64) as usize],
            len,
            hint: 0,
        }
    }
    /// Whether `i` is taken.
    pub fn get(&self, i: u64) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    /// Marks `i` taken.
    pub fn set(&mut self, i: u64) {
        if i < self.len {
            self.words[(i / 64) as usize] |= 1 << (i % 64);
        }
    }
    /// Marks `i` free.
    pub fn clear(&mut self, i: u64) {
        if i < self.len {
            self.words[(i / 64) as usize] &= !(1 << (i % 64));
            self.hint = self.hint.min((i / 64) as usize);
        }
    }
    /// Lowest free offset in `lo..hi`.
    pub fn first_free(&mut self, lo: u64, hi: u64) -> Option<u64> {
        let start = self.hint.max((lo / 64) as usize);
        for w in start..self.words.len() {
            let mut word = self.words[w];
            if w == (lo / 64) as usize {
                word |= (1u64 << (lo % 64)) - 1;
            }
            if word != u64::MAX {
                let i = w as u64 * 64 + u64::from((!word).trailing_zeros());
                if i >= hi {
                    return None;
                }
                self.hint = w;
                return Some(i);
            }
        }
        None
    }
}

/// Usable host offsets of an IPv4 prefix: `1..=size-2` (no network/broadcast), except /31 and /32.
pub fn host_range(v4: &Ipv4Net) -> (u64, u64) {
    let size = 1u64 << (32 - v4.prefix_len());
    if v4.prefix_len() >= 31 {
        (0, size)
    } else {
        (1, size - 1)
    }
}

/// The addresses for host offset `k`.
pub fn addresses_at(v4: &Ipv4Net, v6: Option<&Ipv6Net>, k: u64) -> (Ipv4Addr, Option<Ipv6Addr>) {
    let a4 = Ipv4Addr::from(u32::from(v4.network()).wrapping_add(k as u32));
    let a6 = v6.map(|p| Ipv6Addr::from(u128::from(p.network()).wrapping_add(u128::from(k))));
    (a4, a6)
}

/// Host offset of `ip` in the CVLAN, if it is a usable host address there.
pub fn offset_of(v4: &Ipv4Net, v6: Option<&Ipv6Net>, ip: IpAddr) -> Option<u64> {
    let (lo, hi) = host_range(v4);
    let k = match ip {
        IpAddr::V4(a) if v4.contains(&a) => u64::from(u32::from(a) - u32::from(v4.network())),
        IpAddr::V6(a) if v6.is_some_and(|p| p.contains(&a)) => {
            let d = u128::from(a) - u128::from(v6.map(|p| p.network())?);
            u64::try_from(d).ok()?
        }
        _ => return None,
    };
    (lo..hi).contains(&k).then_some(k)
}

impl Ipam {
    fn state(&self, cvlan_id: &str) -> Arc<CvlanState> {
        let mut m = self.cvlans.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(cvlan_id.to_string()).or_default().clone()
    }

    /// Forgets the cache of a CVLAN (after it was changed or deleted).
    pub fn invalidate(&self, cvlan_id: &str) {
        let mut m = self.cvlans.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(cvlan_id);
    }
}

impl Store {
    /// Allocates one address (the requested one, or the lowest free) and writes the
    /// reservation and its audit event in one transaction shared with concurrent callers.
    ///
    /// # Errors
    /// [`StoreError::Exhausted`], [`StoreError::AddressTaken`],
    /// [`StoreError::AddressOutOfRange`], [`StoreError::NotFound`], database errors.
    pub async fn allocate(self: &Arc<Self>, req: AllocRequest) -> Result<pb::AddressReservation> {
        let st = self.ipam.state(&req.cvlan_id);
        let cvlan_id = req.cvlan_id.clone();
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = st.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.items.push(Pending { req, reply: tx });
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            // A task, not this future: a caller that goes away must not strand the queue.
            let store = self.clone();
            tokio::spawn(async move { store.drain(st, cvlan_id).await });
        }
        rx.await
            .unwrap_or_else(|_| Err(StoreError::Db(Arc::new(sqlx::Error::PoolClosed))))
    }

    async fn drain(self: Arc<Self>, st: Arc<CvlanState>, cvlan_id: String) {
        loop {
            // Callers answered by the previous batch are re-queuing right now: a couple of
            // yields let them join this batch instead of forming a trickle of tiny ones.
            for _ in 0..2 {
                tokio::task::yield_now().await;
            }
            let batch: Vec<Pending> = {
                let mut q = st.queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.items.is_empty() {
                    q.running = false;
                    return;
                }
                let n = q.items.len().min(MAX_BATCH);
                q.items.drain(..n).collect()
            };
            let mut cache = st.cache.lock().await;
            let (reqs, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|p| (p.req, p.reply)).unzip();
            let results = match self.commit_batch(&cvlan_id, &reqs, &mut cache).await {
                Ok(r) => r,
                Err(e) => {
                    *cache = None;
                    let e = Arc::new(e);
                    reqs.iter().map(|_| Err(clone_err(&e))).collect()
                }
            };
            for (reply, r) in replies.into_iter().zip(results) {
                let _ = reply.send(r);
            }
        }
    }

    async fn commit_batch(
        &self,
        cvlan_id: &str,
        reqs: &[AllocRequest],
        cache: &mut Option<Cache>,
    ) -> Result<Vec<Result<pb::AddressReservation>>> {
        let mut w = self.begin_write().await?;
        let tenant = reqs[0].tenant_id.clone();
        let row = sqlx::query(
            "UPDATE cvlans SET alloc_version = alloc_version + 1 WHERE id = $1 AND tenant_id = $2 \
             RETURNING alloc_version, ipv4_prefix, ipv6_prefix",
        )
        .bind(cvlan_id)
        .bind(&tenant)
        .fetch_optional(w.conn())
        .await?;
        let Some(row) = row else {
            return Ok(reqs
                .iter()
                .map(|_| Err(StoreError::NotFound("cvlan")))
                .collect());
        };
        let version: i64 = row.try_get(0)?;
        let v4: Ipv4Net = row
            .try_get::<String, _>(1)?
            .parse()
            .map_err(|_| StoreError::NotFound("cvlan ipv4 prefix"))?;
        let v6s: String = row.try_get(2)?;
        let v6: Option<Ipv6Net> = v6s.parse().ok();
        let fresh =
            matches!(cache, Some(c) if c.version == version - 1 && c.v4 == v4 && c.v6 == v6);
        if !fresh {
            let offsets: Vec<i64> =
                sqlx::query_scalar("SELECT host_offset FROM addresses WHERE cvlan_id = $1")
                    .bind(cvlan_id)
                    .fetch_all(w.conn())
                    .await?;
            let mut used = Bitmap::new(1u64 << (32 - v4.prefix_len()));
            for o in offsets {
                used.set(o as u64);
            }
            *cache = Some(Cache {
                version: version - 1,
                v4,
                v6,
                used,
            });
        }
        let Some(c) = cache.as_mut() else {
            return Err(StoreError::NotFound("cvlan"));
        };
        // Work on a copy so a failed commit leaves the cache untouched.
        let mut used = c.used.clone();
        let (lo, hi) = host_range(&v4);
        let now = time::now_micros();
        let mut results = Vec::with_capacity(reqs.len());
        let mut rows: Vec<(pb::AddressReservation, u64)> = Vec::with_capacity(reqs.len());
        for r in reqs {
            let k = match r.requested {
                Some(ip) => match offset_of(&v4, v6.as_ref(), ip) {
                    None => Err(StoreError::AddressOutOfRange(ip)),
                    Some(k) if used.get(k) => Err(StoreError::AddressTaken(ip)),
                    Some(k) => Ok(k),
                },
                None => used.first_free(lo, hi).ok_or(StoreError::Exhausted),
            };
            match k {
                Ok(k) => {
                    used.set(k);
                    let (a4, a6) = addresses_at(&v4, v6.as_ref(), k);
                    let res = pb::AddressReservation {
                        id: entity::new_id(),
                        tenant_id: r.tenant_id.clone(),
                        cvlan_id: cvlan_id.to_string(),
                        address: a4.to_string(),
                        address_v6: a6.map(|a| a.to_string()).unwrap_or_default(),
                        node_id: r.node_id.clone(),
                        description: r.description.clone(),
                        created_at: Some(time::ts(now)),
                    };
                    results.push(Ok(res.clone()));
                    rows.push((res, k));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if !rows.is_empty() {
            let mut sql = String::from(
                "INSERT INTO addresses (id, tenant_id, cvlan_id, name, body, host_offset, \
                 node_id, created_at, updated_at) VALUES ",
            );
            // The last column (updated_at) repeats the 8th parameter (created_at).
            crate::push_value_rows(&mut sql, crate::placeholder(w.conn()), rows.len(), 8, &[8]);
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (res, k) in &rows {
                q = q
                    .bind(res.id.clone())
                    .bind(res.tenant_id.clone())
                    .bind(res.cvlan_id.clone())
                    .bind(res.address.clone())
                    .bind(serde_json::to_string(res)?)
                    .bind(*k as i64)
                    .bind(res.node_id.clone())
                    .bind(now);
            }
            q.execute(w.conn())
                .await
                .map_err(|e| StoreError::conflict_as(e, "address"))?;
            let events: Vec<pb::AuditEvent> = rows
                .iter()
                .zip(reqs.iter().zip(results.iter()).filter(|(_, r)| r.is_ok()))
                .map(|((res, _), (req, _))| {
                    req.audit.event(
                        "address.create",
                        "address",
                        &res.id,
                        serde_json::json!({"cvlanId": cvlan_id, "address": res.address, "addressV6": res.address_v6, "nodeId": res.node_id}),
                    )
                })
                .collect();
            audit::insert_many(w.conn(), &events).await?;
        }
        w.commit().await?;
        c.used = used;
        c.version = version;
        Ok(results)
    }

    /// Releases a reservation (by id or address) in the caller's transaction and keeps the
    /// CVLAN's cache coherent. Returns the released reservation.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], database errors.
    pub async fn release(
        &self,
        w: &mut crate::WriteTx,
        tenant_id: &str,
        cvlan_id: &str,
        key: &str,
    ) -> Result<pb::AddressReservation> {
        let row = sqlx::query(
            "DELETE FROM addresses WHERE tenant_id = $1 AND cvlan_id = $2 AND (id = $3 OR name = $3) \
             RETURNING body, created_at",
        )
        .bind(tenant_id)
        .bind(cvlan_id)
        .bind(key)
        .fetch_optional(w.conn())
        .await?
        .ok_or(StoreError::NotFound("address"))?;
        let mut res: pb::AddressReservation = serde_json::from_str(row.try_get(0)?)?;
        res.created_at = Some(time::ts(row.try_get(1)?));
        // Bumping the version makes every replica's cache reload before its next allocation.
        sqlx::query("UPDATE cvlans SET alloc_version = alloc_version + 1 WHERE id = $1")
            .bind(cvlan_id)
            .execute(w.conn())
            .await?;
        self.ipam.invalidate(cvlan_id);
        Ok(res)
    }

    /// Addresses in use in a CVLAN.
    ///
    /// # Errors
    /// Database errors.
    pub async fn addresses_used(&self, cvlan_id: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM addresses WHERE cvlan_id = $1")
            .bind(cvlan_id)
            .fetch_one(self.pool())
            .await?;
        Ok(n as u64)
    }
}

fn clone_err(e: &Arc<StoreError>) -> StoreError {
    match e.as_ref() {
        StoreError::Db(d) => StoreError::Db(d.clone()),
        StoreError::NotFound(k) => StoreError::NotFound(k),
        StoreError::Conflict { what } => StoreError::Conflict { what },
        StoreError::Exhausted => StoreError::Exhausted,
        StoreError::AddressTaken(a) => StoreError::AddressTaken(*a),
        StoreError::AddressOutOfRange(a) => StoreError::AddressOutOfRange(*a),
        other => StoreError::Db(Arc::new(sqlx::Error::Protocol(other.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn offsets_map_both_families_and_exclude_network_and_broadcast() {
        let v4: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        let v6: Ipv6Net = "fd00::/64".parse().unwrap();
        assert_eq!(host_range(&v4), (1, 255));
        assert_eq!(
            offset_of(&v4, Some(&v6), "10.0.0.7".parse().unwrap()),
            Some(7)
        );
        assert_eq!(
            offset_of(&v4, Some(&v6), "fd00::7".parse().unwrap()),
            Some(7)
        );
        assert_eq!(offset_of(&v4, Some(&v6), "10.0.0.0".parse().unwrap()), None);
        assert_eq!(
            offset_of(&v4, Some(&v6), "10.0.0.255".parse().unwrap()),
            None
        );
        assert_eq!(
            offset_of(&v4, Some(&v6), "fd00::1:0".parse().unwrap()),
            None
        );
        assert_eq!(offset_of(&v4, Some(&v6), "10.0.1.1".parse().unwrap()), None);
        let (a4, a6) = addresses_at(&v4, Some(&v6), 7);
        assert_eq!(a4.to_string(), "10.0.0.7");
        assert_eq!(a6.unwrap().to_string(), "fd00::7");
    }

    proptest! {
        #[test]
        fn bitmap_first_free_matches_a_linear_scan(
            ops in proptest::collection::vec((any::<bool>(), 0u64..300), 0..400),
            lo in 0u64..10,
        ) {
            let mut b = Bitmap::new(300);
            let mut set = std::collections::BTreeSet::new();
            for (add, i) in ops {
                if add { b.set(i); set.insert(i); } else { b.clear(i); set.remove(&i); }
                let want = (lo..299).find(|i| !set.contains(i));
                prop_assert_eq!(b.first_free(lo, 299), want);
            }
        }
    }
}
