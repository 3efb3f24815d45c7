//! `backflip demo`: a text project and a GIF-clip project with demo users,
//! created idempotently (running it again changes nothing but adds no copies).

use sqlx::PgPool;

use crate::{
    auth::{Role, User},
    clips::{self, ClipLimits, ClipStore},
    error::{Error, Result},
    import,
    projects::{self, MemberRole, ProjectSettings},
    users,
};

/// The demo users' shared password (they are demo accounts on a local server).
pub const DEMO_PASSWORD: &str = "backflip-demo";

/// The demo logins: (name, role).
pub const DEMO_USERS: [(&str, Role); 5] = [
    ("admin", Role::Admin),
    ("lead", Role::Lead),
    ("rater1", Role::Annotator),
    ("rater2", Role::Annotator),
    ("rater3", Role::Annotator),
];

/// Create (or find) the demo users and projects.
pub async fn seed(pool: &PgPool, store: &ClipStore) -> anyhow::Result<()> {
    for (name, role) in DEMO_USERS {
        match users::create(pool, name, role, Some(DEMO_PASSWORD)).await {
            Ok(_) | Err(Error::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let lead = users::by_name(pool, "lead").await?;
    text_project(pool, &lead).await?;
    clip_project(pool, store, &lead).await?;
    Ok(())
}

async fn project(
    pool: &PgPool,
    lead: &User,
    settings: ProjectSettings,
) -> Result<projects::Access> {
    let slug = settings.slug.clone();
    match projects::create(pool, lead, settings).await {
        Ok(_) | Err(Error::Conflict { .. }) => {}
        Err(e) => return Err(e),
    }
    let access = projects::access(pool, lead, &slug).await?;
    for (name, role) in DEMO_USERS {
        if role == Role::Annotator {
            projects::add_member(pool, &access, name, MemberRole::Annotator).await?;
        }
    }
    Ok(access)
}

async fn text_project(pool: &PgPool, lead: &User) -> anyhow::Result<()> {
    let mut s = ProjectSettings::new("demo-text", "Demo: arithmetic explanations");
    s.instructions = "Pick the answer that is **correct** and explains itself clearly.\n\n\
        - Correctness first, then clarity.\n- Use *Equally good* only when you truly cannot prefer one."
        .into();
    s.rationale = "optional".into();
    s.strength_scale = Some(3);
    let access = project(pool, lead, s).await?;
    let mut body = String::new();
    for i in 0..40u32 {
        let (x, y) = (7 + i * 13 % 50, 3 + i * 29 % 40);
        let right = format!(
            "{x} + {y} = {}.\n\nAdd the tens, then the ones: the total is {}.",
            x + y,
            x + y
        );
        let wrong = format!("{x} + {y} = {}.", x + y + 1 + i % 3);
        let (a, b) = if i % 2 == 0 {
            (right, wrong)
        } else {
            (wrong, right)
        };
        let line = serde_json::json!({
            "id": format!("sum-{i}"),
            "prompt": format!("What is {x} + {y}? Explain briefly."),
            "a": {"text": a, "policy": if i % 2 == 0 { "careful" } else { "hasty" }},
            "b": {"text": b, "policy": if i % 2 == 0 { "hasty" } else { "careful" }},
        });
        body.push_str(&line.to_string());
        body.push('\n');
    }
    import::import(pool, &access, body.as_bytes()).await?;
    Ok(())
}

async fn clip_project(pool: &PgPool, store: &ClipStore, lead: &User) -> anyhow::Result<()> {
    let mut s = ProjectSettings::new("demo-clips", "Demo: reach the goal");
    s.media_kind = "gif".into();
    s.instructions = "Each clip shows an agent (the blob) and a goal marker. \
        Pick the clip in which the agent heads to the goal **more directly**."
        .into();
    let access = project(pool, lead, s).await?;
    let limits = ClipLimits::default();
    let mut body = String::new();
    for i in 0..20u64 {
        let mut names = Vec::new();
        for (side, skill) in [
            ("a", (i % 5) as f32 / 4.0),
            ("b", ((i + 2) % 5) as f32 / 4.0),
        ] {
            let name = format!("demo-{i}-{side}.gif");
            let gif = clips::demo_clip(i * 2 + u64::from(side == "b"), skill);
            import::ingest_clip(pool, store, &access, &name, gif.into(), &limits).await?;
            names.push(name);
        }
        let line = serde_json::json!({
            "id": format!("clip-pair-{i}"),
            "prompt": "Which agent heads to the goal more directly?",
            "a": {"clip": names[0]},
            "b": {"clip": names[1]},
        });
        body.push_str(&line.to_string());
        body.push('\n');
    }
    import::import(pool, &access, body.as_bytes()).await?;
    Ok(())
}
