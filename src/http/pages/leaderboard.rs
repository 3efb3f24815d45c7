//! The policy leaderboard page: Bradley–Terry strengths with intervals, and the win matrix.

use super::*;
use crate::leaderboard::{self, Leaderboard};

#[derive(Template, WebTemplate)]
#[template(path = "leaderboard.html")]
pub(super) struct LeaderboardPage {
    user: Option<String>,
    csrf: String,
    project: Project,
    board: Leaderboard,
    /// Policies in standing order, for the matrix's rows and columns.
    order: Vec<String>,
    /// `cells[row][col]`: "wins–ties–losses" of row against column, empty where they never met.
    cells: Vec<Vec<String>>,
    chart: Option<String>,
}

pub(super) async fn leaderboard_page(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
) -> PageResult<LeaderboardPage> {
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_read()?;
    let board = leaderboard::for_project(&state.pool, access.project.id).await?;
    let order: Vec<String> = board.standings.iter().map(|s| s.policy.clone()).collect();
    let cells = order
        .iter()
        .map(|row| {
            order
                .iter()
                .map(|col| {
                    board
                        .matrix
                        .iter()
                        .find(|h| &h.policy == row && &h.opponent == col)
                        .map(|h| format!("{}–{}–{}", h.wins, h.ties, h.losses))
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    let chart = crate::http::charts::strengths(
        &board
            .standings
            .iter()
            .map(|s| (s.policy.clone(), s.strength, s.low, s.high))
            .collect::<Vec<_>>(),
    );
    let c = chrome(&s);
    Ok(LeaderboardPage {
        user: c.user,
        csrf: c.csrf,
        project: access.project,
        board,
        order,
        cells,
        chart,
    })
}
