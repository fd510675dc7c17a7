# Saved CloudWatch Logs Insights queries (console: CloudWatch > Logs Insights > Queries,
# folder "<name>"), over the enqueue, sync and daemon log groups. Every line mirrord logs
# is one JSON object (event, level, timestamp, job_id, …), which Logs Insights splits
# into fields. docs/operations.md#watching-progress-and-logs says when to use which.

locals {
  query_log_groups = [for k in ["enqueue", "sync", "daemon"] : var.log_group_names[k]]
}

# The current job: its latest progress line (bottles done of total, failed, MB/s, ETA),
# newest first. The Lambda and the daemon log one every 10 s while bottles move.
resource "aws_cloudwatch_query_definition" "progress" {
  name            = "${var.name}/progress of the current job"
  log_group_names = local.query_log_groups

  query_string = <<-EOT
    fields @timestamp, job_id, event, done, total, failed, bytes, mb_per_s, eta_s
    | filter event in ["progress", "publish_progress", "enqueued", "checkpoint", "published"]
    | sort @timestamp desc
    | limit 50
  EOT
}

# Everything that went wrong: warnings and errors, each bottle that failed, jobs that
# failed or crashed, newest first.
resource "aws_cloudwatch_query_definition" "failures" {
  name            = "${var.name}/failures"
  log_group_names = local.query_log_groups

  query_string = <<-EOT
    fields @timestamp, @logStream, job_id, level, event, key, error, kind
    | filter level in ["warning", "error", "critical"] or @message like /Task timed out|Traceback/
    | sort @timestamp desc
    | limit 200
  EOT
}

# One job from enqueue to report, in order: replace the job_id (e.g. 2026-12-07-weekly).
resource "aws_cloudwatch_query_definition" "job_timeline" {
  name            = "${var.name}/timeline of one job"
  log_group_names = local.query_log_groups

  query_string = <<-EOT
    fields @timestamp, @log, level, event, done, total, failed, error
    | filter job_id = "REPLACE-WITH-JOB-ID"
    | sort @timestamp asc
    | limit 1000
  EOT
}
