#!/usr/bin/env bash
# The Task service of a running `bulkhead up`, with grpcurl only: two tenants,
# tasks in each, another tenant's task refused, pages with a page token, a bulk
# update and the analytics. Run from the checkout while `cargo run --bin bulkhead
# -- up` runs (needs grpcurl and python3):
#   bash deploy/demo/task-walkthrough.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
run=$RANDOM

ADMIN=$(login admin@bulkhead.local "$ADMIN_PASSWORD")
say "two users, each owning a tenant"
for who in alice bob; do
  id=$(rpc "$ADMIN" $AUTH bulkhead.auth.v1.AuthService/CreateUser \
    "{\"email\":\"$who$run@example.com\",\"password\":\"$who's long password\"}" | field "['user']['id']")
  rpc "$ADMIN" $TENANT bulkhead.tenant.v1.TenantService/CreateTenant \
    "{\"slug\":\"$who-co-$run\",\"name\":\"$who's company\",\"owner_user_id\":\"$id\"}" | field "['tenant']['slug']"
done
ALICE=$(login "alice$run@example.com" "alice's long password")
BOB=$(login "bob$run@example.com" "bob's long password")

say "alice creates three tasks (a retry with the same request_id returns the first)"
n=0
for title in "Write the report" "Review the budget" "Plan the offsite"; do
  n=$((n + 1))
  rpc "$ALICE" $TASK bulkhead.task.v1.TaskService/CreateTask "{\"title\":\"$title\",\"request_id\":\"req-$run-$n\"}" | show "d['task']['title'], d['task']['id']"
done
echo "retry of req-$run-1:"
rpc "$ALICE" $TASK bulkhead.task.v1.TaskService/CreateTask "{\"title\":\"Write the report\",\"request_id\":\"req-$run-1\"}" | show "d['task']['title'], d['task']['id']"
BOB_TASK=$(rpc "$BOB" $TASK bulkhead.task.v1.TaskService/CreateTask '{"title":"Bob'"'"'s secret"}' | field "['task']['id']")

say "alice asks for bob's task by id: NOT_FOUND, as for an id nobody has"
rpc "$ALICE" $TASK bulkhead.task.v1.TaskService/GetTask "{\"task_id\":\"$BOB_TASK\"}"

say "pages of two, newest first, with the page token"
page=$(rpc "$ALICE" $TASK bulkhead.task.v1.TaskService/ListTasks '{"page_size":2}')
echo "$page" | show "[t['title'] for t in d['tasks']]"
token=$(echo "$page" | field "['nextPageToken']")
rpc "$ALICE" $TASK bulkhead.task.v1.TaskService/ListTasks "{\"page_size\":2,\"page_token\":\"$token\"}" | show "[t['title'] for t in d['tasks']]"
say "bob cannot use alice's page token"
rpc "$BOB" $TASK bulkhead.task.v1.TaskService/ListTasks "{\"page_size\":2,\"page_token\":\"$token\"}"

say "a bulk update: alice's tasks and bob's id; only hers are updated (and reported)"
ids=$(rpc "$ALICE" $TASK bulkhead.task.v1.TaskService/ListTasks '{}' | show "json.dumps([t['id'] for t in d['tasks']])")
ids="${ids%]}, \"$BOB_TASK\"]"
rpc "$ALICE" $TASK bulkhead.task.v1.TaskService/BulkUpdateTaskStatus "{\"task_ids\":$ids,\"status\":\"TASK_STATUS_IN_PROGRESS\"}"

say "analytics: alice's tenant only"
rpc "$ALICE" $TASK bulkhead.task.v1.TaskService/GetTaskAnalytics '{"trend_days":3}'
