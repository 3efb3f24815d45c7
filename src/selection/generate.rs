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

use super::plan::{self, Node};
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
pub async fn top_up(pool: &PgPool, project_id: Uuid) -> Result<usize> {
    let mut tx = pool.begin().await?;
    let (strategy, random_share, target, overlap): (String, f32, i32, i32) = sqlx::query_as(
        "select strategy, random_share, open_target, overlap from projects where id = $1 for update",
    )
    .bind(project_id)
    .fetch_one(&mut *tx)
    .await?;
    let open: i64 = sqlx::query_scalar(
        "select count(*) from comparisons
         where project_id = $1 and generated and judged_count + leased_count < overlap",
    )
    .bind(project_id)
    .fetch_one(&mut *tx)
    .await?;
    let need = (i64::from(target) - open).max(0) as usize;
    if need == 0 {
        return Ok(0);
    }
    let mut g = load(&mut tx, project_id).await?;
    let mut rng = StdRng::from_os_rng();
    let _ = (strategy, random_share);
    let pairs = plan::coverage_pairs(&mut g.nodes, &mut g.taken, need, &mut rng);
    if pairs.is_empty() {
        return Ok(0);
    }
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
    Ok(pairs.len())
}
