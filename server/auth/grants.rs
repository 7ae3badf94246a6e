//! Grants: who besides staff may see a study. A delivery to a patient is claimed with a code
//! (≥ 128 bits, shown once to staff, stored as a hash); a share with a facility is visible at
//! once. Email matching alone never grants access. Tree `grants`:
//!
//! | key | value |
//! |---|---|
//! | `G\0<grant id>` | `Grant` |
//! | `GS\0<study>\0<grant id>` | grants of a study |
//! | `GC\0<blake3(code)>` | grant id of a claim code |
//! | `GU\0<user id>\0<study>` | grant id: the study is visible to that account |

use serde::{Deserialize, Serialize};

use super::accounts::AccountError;
use super::model::Id;
use crate::ids::StudyUid;
use crate::store::kv::{enc, key as k};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum GrantKind {
    /// Delivered to a patient by email address; visible once claimed with the code.
    Patient {
        email: String,
        code_hash: String,
        claimed_by: Option<Id>,
        claimed_ms: Option<u64>,
    },
    /// Shared with a facility account; visible at once.
    Facility { account_id: Id },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub id: Id,
    pub study: StudyUid,
    #[serde(flatten)]
    pub kind: GrantKind,
    pub created_by: Id,
    pub created_ms: u64,
    pub revoked_ms: Option<u64>,
}

impl Grant {
    /// The account that sees the study through this grant, if any.
    pub fn grantee(&self) -> Option<&Id> {
        if self.revoked_ms.is_some() {
            return None;
        }
        match &self.kind {
            GrantKind::Patient { claimed_by, .. } => claimed_by.as_ref(),
            GrantKind::Facility { account_id } => Some(account_id),
        }
    }
}

/// Outcome of redeeming a claim code.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    Claimed(Grant),
    /// Unknown, revoked, or claimed by another account: one answer for all.
    Refused,
}

pub struct Grants {
    tree: sled::Tree,
    db: sled::Db,
    write: std::sync::Mutex<()>,
}

/// Claim codes: 26 characters of Crockford base32 (130 bits), shown in groups of five.
pub fn new_claim_code() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let raw: String = (0..26)
        .map(|_| ALPHABET[rand::random_range(0..32)] as char)
        .collect();
    raw.as_bytes()
        .chunks(5)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("-")
}

/// Hash of a claim code as typed: case, spaces and dashes do not matter; I/L read as 1, O as 0.
pub fn code_hash(code: &str) -> String {
    let norm: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'I' | 'L' => '1',
            'O' => '0',
            other => other,
        })
        .collect();
    blake3::hash(norm.as_bytes()).to_hex().to_string()
}

impl Grants {
    pub fn open(db: &sled::Db) -> Result<Self, AccountError> {
        Ok(Grants {
            tree: db.open_tree("grants")?,
            db: db.clone(),
            write: std::sync::Mutex::new(()),
        })
    }

    fn get(&self, id: &Id) -> Result<Option<Grant>, AccountError> {
        self.tree
            .get(k("G", &[id.as_str()]))?
            .map(|v| serde_json::from_slice(&v).map_err(|e| AccountError::Corrupt(e.to_string())))
            .transpose()
    }

    pub fn grant(&self, id: &Id) -> Result<Option<Grant>, AccountError> {
        self.get(id)
    }

    /// Store a new grant (and its code hash). Durable when it returns.
    pub fn create(&self, g: &Grant) -> Result<(), AccountError> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut b = sled::Batch::default();
        b.insert(k("G", &[g.id.as_str()]), enc(g));
        b.insert(k("GS", &[g.study.as_str(), g.id.as_str()]), &[][..]);
        match &g.kind {
            GrantKind::Patient { code_hash, .. } => {
                b.insert(k("GC", &[code_hash]), g.id.as_str().as_bytes());
            }
            GrantKind::Facility { account_id } => {
                b.insert(
                    k("GU", &[account_id.as_str(), g.study.as_str()]),
                    g.id.as_str().as_bytes(),
                );
            }
        }
        self.tree.apply_batch(b)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn of_study(&self, study: &StudyUid) -> Result<Vec<Grant>, AccountError> {
        let mut p = k("GS", &[study.as_str()]);
        p.push(0);
        let mut out = Vec::new();
        for key in self.tree.scan_prefix(&p).keys() {
            let key = key?;
            if let Some(id) = Id::parse(&String::from_utf8_lossy(&key[p.len()..]))
                && let Some(g) = self.get(&id)?
            {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// Redeem a claim code for `user`. Claiming one's own grant again is fine.
    pub fn claim(&self, code: &str, user: &Id, now_ms: u64) -> Result<Claim, AccountError> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let Some(id) = self.tree.get(k("GC", &[&code_hash(code)]))? else {
            return Ok(Claim::Refused);
        };
        let Some(id) = Id::parse(&String::from_utf8_lossy(&id)) else {
            return Ok(Claim::Refused);
        };
        let Some(mut g) = self.get(&id)? else {
            return Ok(Claim::Refused);
        };
        if g.revoked_ms.is_some() {
            return Ok(Claim::Refused);
        }
        let GrantKind::Patient {
            claimed_by,
            claimed_ms,
            ..
        } = &mut g.kind
        else {
            return Ok(Claim::Refused);
        };
        match claimed_by {
            Some(other) if other != user => return Ok(Claim::Refused),
            Some(_) => return Ok(Claim::Claimed(g)),
            None => {
                *claimed_by = Some(user.clone());
                *claimed_ms = Some(now_ms);
            }
        }
        let mut b = sled::Batch::default();
        b.insert(k("G", &[g.id.as_str()]), enc(&g));
        b.insert(
            k("GU", &[user.as_str(), g.study.as_str()]),
            g.id.as_str().as_bytes(),
        );
        self.tree.apply_batch(b)?;
        self.db.flush()?;
        Ok(Claim::Claimed(g))
    }

    /// Revoke a grant: the grantee loses sight of the study on its next request.
    pub fn revoke(&self, id: &Id, now_ms: u64) -> Result<Option<Grant>, AccountError> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut g) = self.get(id)? else {
            return Ok(None);
        };
        let grantee = g.grantee().cloned();
        g.revoked_ms.get_or_insert(now_ms);
        let mut b = sled::Batch::default();
        b.insert(k("G", &[g.id.as_str()]), enc(&g));
        if let Some(u) = grantee {
            // Another live grant may still show the study to the same account.
            let still = self
                .of_study(&g.study)?
                .into_iter()
                .any(|o| o.id != g.id && o.grantee() == Some(&u));
            if !still {
                b.remove(k("GU", &[u.as_str(), g.study.as_str()]));
            }
        }
        self.tree.apply_batch(b)?;
        self.db.flush()?;
        Ok(Some(g))
    }

    /// Drop every grant of a study that no longer exists (claim codes included), in one
    /// batch. Durable when it returns. Returns how many grants went.
    pub fn forget_study(&self, study: &StudyUid) -> Result<usize, AccountError> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let grants = self.of_study(study)?;
        if grants.is_empty() {
            return Ok(0);
        }
        let mut b = sled::Batch::default();
        for g in &grants {
            b.remove(k("G", &[g.id.as_str()]));
            b.remove(k("GS", &[study.as_str(), g.id.as_str()]));
            match &g.kind {
                GrantKind::Patient {
                    code_hash,
                    claimed_by,
                    ..
                } => {
                    b.remove(k("GC", &[code_hash]));
                    if let Some(u) = claimed_by {
                        b.remove(k("GU", &[u.as_str(), study.as_str()]));
                    }
                }
                GrantKind::Facility { account_id } => {
                    b.remove(k("GU", &[account_id.as_str(), study.as_str()]));
                }
            }
        }
        self.tree.apply_batch(b)?;
        self.db.flush()?;
        Ok(grants.len())
    }

    /// Studies that have at least one grant (revoked ones included).
    pub fn granted_studies(&self) -> Result<Vec<StudyUid>, AccountError> {
        let p = k("GS", &[""]); // "GS\0"
        let mut out: Vec<StudyUid> = Vec::new();
        for key in self.tree.scan_prefix(&p).keys() {
            let key = key?;
            let rest = &key[p.len()..];
            let uid = rest.split(|b| *b == 0).next().unwrap_or_default();
            if let Ok(s) = StudyUid::parse(&String::from_utf8_lossy(uid))
                && out.last() != Some(&s)
            {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Drop the grants of every study `stored` says is gone; returns how many studies.
    ///
    /// Run at start-up. DELETE removes a study's index entries (flushed) and then its grants;
    /// the two live in different sled trees, so a crash between the two steps would leave
    /// grants to a study that no longer exists (and that would show it again to the grantees
    /// if the same Study UID were ever stored again). Sweeping here makes the pair consistent
    /// after any crash; the same goes for a grant created while its study was being deleted.
    pub fn forget_missing_studies<E>(
        &self,
        stored: impl Fn(&StudyUid) -> Result<bool, E>,
    ) -> Result<usize, E>
    where
        E: From<AccountError>,
    {
        let mut gone = 0;
        for study in self.granted_studies()? {
            if !stored(&study)? {
                self.forget_study(&study)?;
                gone += 1;
            }
        }
        Ok(gone)
    }

    /// Is the study visible to this account through a live grant?
    pub fn visible(&self, user: &Id, study: &StudyUid) -> Result<bool, AccountError> {
        Ok(self
            .tree
            .get(k("GU", &[user.as_str(), study.as_str()]))?
            .is_some())
    }

    /// Studies visible to an account through grants.
    pub fn visible_studies(&self, user: &Id) -> Result<Vec<StudyUid>, AccountError> {
        let mut p = k("GU", &[user.as_str()]);
        p.push(0);
        let mut out = Vec::new();
        for key in self.tree.scan_prefix(&p).keys() {
            let key = key?;
            if let Ok(s) = StudyUid::parse(&String::from_utf8_lossy(&key[p.len()..])) {
                out.push(s);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants() -> (tempfile::TempDir, Grants) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        (dir, Grants::open(&db).unwrap())
    }

    #[test]
    fn claim_codes_are_long_and_forgiving_to_type() {
        let c = new_claim_code();
        assert_eq!(c.len(), 26 + 5);
        assert_eq!(
            code_hash(&c),
            code_hash(&c.to_lowercase().replace('-', " "))
        );
        assert_eq!(code_hash("ABCDE-1O0IL"), code_hash("abcde 10011"));
    }

    #[test]
    fn claim_revoke_and_facility_visibility() {
        let (_d, g) = grants();
        let study = StudyUid::parse("1.2.3").unwrap();
        let (staff, pat, other, fac) = (Id::random(), Id::random(), Id::random(), Id::random());
        let code = new_claim_code();
        let grant = Grant {
            id: Id::random(),
            study: study.clone(),
            kind: GrantKind::Patient {
                email: "p@x.org".into(),
                code_hash: code_hash(&code),
                claimed_by: None,
                claimed_ms: None,
            },
            created_by: staff.clone(),
            created_ms: 1,
            revoked_ms: None,
        };
        g.create(&grant).unwrap();
        assert!(!g.visible(&pat, &study).unwrap());
        assert_eq!(g.claim("WRONG-CODE", &pat, 2).unwrap(), Claim::Refused);
        assert!(matches!(
            g.claim(&code, &pat, 2).unwrap(),
            Claim::Claimed(_)
        ));
        assert!(g.visible(&pat, &study).unwrap());
        // Reuse by another account is refused; by the same account is idempotent.
        assert_eq!(g.claim(&code, &other, 3).unwrap(), Claim::Refused);
        assert!(matches!(
            g.claim(&code, &pat, 3).unwrap(),
            Claim::Claimed(_)
        ));
        // Facility share: visible at once.
        let share = Grant {
            id: Id::random(),
            study: study.clone(),
            kind: GrantKind::Facility {
                account_id: fac.clone(),
            },
            created_by: staff,
            created_ms: 1,
            revoked_ms: None,
        };
        g.create(&share).unwrap();
        assert!(g.visible(&fac, &study).unwrap());
        assert_eq!(g.of_study(&study).unwrap().len(), 2);
        // Revocation takes effect at once; a revoked code cannot be claimed.
        g.revoke(&grant.id, 4).unwrap();
        g.revoke(&share.id, 4).unwrap();
        assert!(!g.visible(&pat, &study).unwrap());
        assert!(!g.visible(&fac, &study).unwrap());
        assert_eq!(g.claim(&code, &pat, 5).unwrap(), Claim::Refused);
    }

    #[test]
    fn start_up_sweep_drops_grants_of_studies_no_longer_stored_and_only_those() {
        let (_d, g) = grants();
        let fac = Id::random();
        // "1.2.3" sorts just before "1.2.3.4": the sweep must tell them apart.
        let studies = ["1.2.3", "1.2.3.4", "1.2.30"].map(|s| StudyUid::parse(s).unwrap());
        for study in &studies {
            for _ in 0..2 {
                g.create(&Grant {
                    id: Id::random(),
                    study: study.clone(),
                    kind: GrantKind::Facility {
                        account_id: fac.clone(),
                    },
                    created_by: Id::random(),
                    created_ms: 1,
                    revoked_ms: None,
                })
                .unwrap();
            }
        }
        assert_eq!(g.granted_studies().unwrap(), studies.to_vec());
        let stored = |s: &StudyUid| Ok::<_, AccountError>(s.as_str() != "1.2.3.4");
        assert_eq!(g.forget_missing_studies(stored).unwrap(), 1);
        assert!(g.of_study(&studies[1]).unwrap().is_empty());
        assert!(!g.visible(&fac, &studies[1]).unwrap());
        for kept in [&studies[0], &studies[2]] {
            assert_eq!(g.of_study(kept).unwrap().len(), 2);
            assert!(g.visible(&fac, kept).unwrap());
        }
        // Nothing left to sweep.
        assert_eq!(g.forget_missing_studies(stored).unwrap(), 0);
    }
}
