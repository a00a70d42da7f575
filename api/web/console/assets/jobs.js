// Jobs: the scheduled background jobs from /ops/jobs, each with its last run, last success and
// next due time. An overdue job says so in words, not by colour alone.

import { call, paths } from "./api.js";
import { h, seconds, table, when } from "./dom.js";

export async function jobsView(ctx) {
  ctx.title("Jobs");
  const { jobs } = await call("GET", paths.jobs);
  const overdue = jobs.filter((job) => job.overdue);
  const summary = overdue.length
    ? h(
        "div",
        { class: "notice warning" },
        h("p", {}, h("strong", { text: overdue.length === 1 ? "1 job is overdue: " : `${overdue.length} jobs are overdue: ` }), overdue.map((job) => job.job).join(", ")),
        h("p", { text: "An overdue job has not succeeded for two of its intervals. Check that m2m beat (exactly one) and at least one m2m worker are running." }),
      )
    : h("p", { class: "notice ok", text: `All ${jobs.length} scheduled jobs are on schedule.` });
  return h(
    "div",
    { class: "view" },
    h(
      "div",
      { class: "title-row" },
      h("h1", { tabindex: "-1", text: "Jobs" }),
      h("button", { type: "button", class: "secondary", id: "refresh-jobs", text: "Refresh", onclick: () => ctx.reload("#refresh-jobs") }),
    ),
    summary,
    table(
      "Scheduled jobs",
      [
        { label: "Job", class: "nowrap", cell: (job) => h("code", { text: job.job }) },
        { label: "Runs every", cell: (job) => seconds(job.everySeconds) },
        { label: "Last run", cell: lastRun },
        { label: "Last success", cell: (job) => (job.lastSuccessAt ? when(job.lastSuccessAt) : h("span", { class: "muted", text: "Never" })) },
        { label: "Next due", cell: (job) => when(job.nextDueAt) },
        {
          label: "Status",
          cell: (job) =>
            job.overdue
              ? h("span", { class: "badge overdue" }, h("span", { "aria-hidden": "true", text: "⚠ " }), "Overdue")
              : h("span", { class: "badge ok", text: "On schedule" }),
        },
      ],
      jobs,
    ),
  );
}

const OUTCOMES = { success: "Succeeded", failure: "Failed", running: "Running" };

function lastRun(job) {
  const run = job.lastRun;
  if (!run) return h("span", { class: "muted", text: "Not yet" });
  return h(
    "span",
    { class: "run" },
    when(run.startedAt),
    h("span", { class: run.outcome === "failure" ? "outcome failure" : "outcome", text: OUTCOMES[run.outcome] ?? run.outcome }),
    run.error ? h("span", { class: "muted error-text", text: ` ${run.error}` }) : null,
  );
}
