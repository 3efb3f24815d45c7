//! The generator: keeps `open_target` generated pairs open in a project by
//! inserting `comparisons` rows drawn within its rollout groups.
//!
//! Concurrency: it locks the project row (as an import does), so two
//! generators never count the same gap twice and never insert the same pair;
//! the unique index on the unordered pair makes the latter a database fact
//! anyway. It never touches existing rows, so leased or partly judged pairs
//! are undisturbed; `next` does not take the project lock and never waits on it.

use std::collections::{HashMap, HashSet};

use rand::{SeedableRng, rngs::StdRng};
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    plan::{self, Node},
    score::{self, Scorer},
};
use crate::error::Result;

/// A project's rollouts in groups and its generated pairs, as the planner sees them.
pub(crate) struct Graph {
    pub ids: Vec<Uuid>,
    pub prompts: Vec<String>,
    pub nodes: Vec<Node>,
    pub taken: HashSet<(usize, usize)>,
}

pub(crate) async fn load(conn: &mut sqlx::PgConnection, project_id: Uuid) -> Result<Graph> {
    let rows: Vec<(Uuid, String, Option<String>, Option<String>)> = sqlx::query_as(
        "select id, group_key, policy, prompt from rollouts
         where project_id = $1 and group_key is not null order by created_at, id",
    )
    .bind(project_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut group_ix: HashMap<String, usize> = HashMap::new();
    let mut index = HashMap::with_capacity(rows.len());
    let mut g = Graph {
        ids: Vec::with_capacity(rows.len()),
        prompts: Vec::with_capacity(rows.len()),
        nodes: Vec::with_capacity(rows.len()),
        taken: HashSet::new(),
    };
    for (id, group, policy, prompt) in rows {
        let n = group_ix.len();
        let group = *group_ix.entry(group).or_insert(n);
        index.insert(id, g.ids.len());
        g.ids.push(id);
        g.prompts.push(prompt.unwrap_or_default());
        g.nodes.push(Node {
            group,
            policy,
            count: 0,
        });
    }
    let pairs: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "select rollout_a, rollout_b from comparisons where project_id = $1 and generated",
    )
    .bind(project_id)
    .fetch_all(&mut *conn)
    .await?;
    for (a, b) in pairs {
        if let (Some(&i), Some(&j)) = (index.get(&a), index.get(&b)) {
            g.nodes[i].count += 1;
            g.nodes[j].count += 1;
            g.taken.insert((i.min(j), i.max(j)));
        }
    }
    Ok(g)
}

/// Insert pairs (node indices) with their priorities, in the order given
/// (`seq` keeps it among equal priorities).
pub(crate) async fn insert(
    conn: &mut sqlx::PgConnection,
    project_id: Uuid,
    overlap: i32,
    g: &Graph,
    pairs: &[(usize, usize)],
    priorities: &[i32],
) -> Result<()> {
    let a: Vec<Uuid> = pairs.iter().map(|&(i, _)| g.ids[i]).collect();
    let b: Vec<Uuid> = pairs.iter().map(|&(_, j)| g.ids[j]).collect();
    let prompts: Vec<&str> = pairs.iter().map(|&(i, _)| g.prompts[i].as_str()).collect();
    sqlx::query(
        "insert into comparisons (project_id, prompt, rollout_a, rollout_b, overlap, priority, generated)
         select $1, prompt, a, b, $2, priority, true
         from unnest($3::text[], $4::uuid[], $5::uuid[], $6::int[])
              with ordinality as t(prompt, a, b, priority, n)
         order by n",
    )
    .bind(project_id)
    .bind(overlap)
    .bind(&prompts)
    .bind(&a)
    .bind(&b)
    .bind(priorities)
    .execute(conn)
    .await?;
    Ok(())
}

/// Top the project's open generated pairs up to its target by its strategy.
/// Returns how many pairs were generated.
///
/// `uncertainty` and `mixed` need the current ensemble: without a model yet
/// they fall back to `random`; without a `scorer` (an import from the CLI) they
/// queue the `select` job, which has one. Coverage comes first under every
/// strategy: rollouts no pair holds yet are paired before any pair is scored.
pub async fn top_up(pool: &PgPool, project_id: Uuid, scorer: Option<Scorer<'_>>) -> Result<usize> {
    let mut tx = pool.begin().await?;
    let (strategy, random_share, target, overlap, has_model): (String, f32, i32, i32, bool) =
        sqlx::query_as(
            "select strategy, random_share, open_target, overlap, current_model is not null
             from projects where id = $1 for update",
        )
        .bind(project_id)
        .fetch_one(&mut *tx)
        .await?;
    let open: i64 = sqlx::query_scalar(
        "select count(*) from comparisons
         where project_id = $1 and generated and is_open",
    )
    .bind(project_id)
    .fetch_one(&mut *tx)
    .await?;
    let need = (i64::from(target) - open).max(0) as usize;
    if need == 0 {
        return Ok(0);
    }
    let active = strategy != "random" && has_model;
    let Some(scorer) = scorer.filter(|_| active) else {
        if active {
            let payload = serde_json::json!({"reason": "needs the ensemble"});
            crate::jobs::storage::enqueue(&mut tx, super::job::KIND, Some(project_id), payload)
                .await?;
            tx.commit().await?;
            return Ok(0);
        }
        let mut g = load(&mut tx, project_id).await?;
        let pairs =
            plan::coverage_pairs(&mut g.nodes, &mut g.taken, need, &mut StdRng::from_os_rng());
        insert(
            &mut tx,
            project_id,
            overlap,
            &g,
            &pairs,
            &vec![0; pairs.len()],
        )
        .await?;
        tx.commit().await?;
        return Ok(pairs.len());
    };
    let mut g = load(&mut tx, project_id).await?;
    let mut rng = StdRng::from_os_rng();
    let share = if strategy == "mixed" {
        random_share
    } else {
        0.0
    };
    let draft = plan::draft(&mut g.nodes, &mut g.taken, need, share, &mut rng);
    let ids: Vec<(Uuid, Uuid)> = draft
        .pool
        .iter()
        .map(|&(i, j)| (g.ids[i], g.ids[j]))
        .collect();
    let scores = score::disagreement(pool, scorer, project_id, &ids)
        .await?
        .unwrap_or_else(|| vec![0.0; ids.len()]);
    let (pairs, priorities) = plan::finish(draft, &scores, &mut g.nodes, &mut g.taken, &mut rng);
    if !pairs.is_empty() {
        insert(&mut tx, project_id, overlap, &g, &pairs, &priorities).await?;
    }
    tx.commit().await?;
    Ok(pairs.len())
}

/// Queue refresh: re-score the project's open generated pairs that nobody holds
/// or has judged, with the current model, and update their priorities in place.
/// Leased or partly judged pairs keep theirs. Returns the pairs re-scored.
pub async fn refresh(pool: &PgPool, project_id: Uuid, scorer: Scorer<'_>) -> Result<usize> {
    let rows: Vec<(Uuid, Uuid, Uuid)> = sqlx::query_as(
        "select c.id, c.rollout_a, c.rollout_b from comparisons c join projects p on p.id = c.project_id
         where c.project_id = $1 and c.generated and c.priority between 1 and $2
           and c.taken_count = 0 and p.strategy <> 'random'",
    )
    .bind(project_id)
    .bind(score::MAX_SCORED)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<(Uuid, Uuid)> = rows.iter().map(|&(_, a, b)| (a, b)).collect();
    let Some(scores) = score::disagreement(pool, scorer, project_id, &ids).await? else {
        return Ok(0);
    };
    let pair_ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let priorities: Vec<i32> = scores.into_iter().map(score::priority).collect();
    // The predicate is re-checked on each row as it is locked: a pair leased
    // or judged meanwhile keeps its priority.
    let n = sqlx::query(
        "update comparisons c set priority = t.p
         from unnest($1::uuid[], $2::int[]) as t(id, p)
         where c.id = t.id and c.taken_count = 0",
    )
    .bind(&pair_ids)
    .bind(&priorities)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n as usize)
}
