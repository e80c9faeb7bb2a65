DROP INDEX sessions_user_started;
