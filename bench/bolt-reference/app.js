// Bolt for JavaScript acking every slash command, with Bolt's own request
// signature check, and nothing durable: the reference bench/slack-load's
// targets are stated against. Usage: SLACK_SIGNING_SECRET=... PORT=... node app.js
const { App, LogLevel } = require('@slack/bolt');

const app = new App({
  token: 'xoxb-bench',
  signingSecret: process.env.SLACK_SIGNING_SECRET,
  // Known ids, so Bolt never calls auth.test (there is no Slack here).
  botId: 'BBENCH',
  botUserId: 'UBOTBENCH',
  tokenVerificationEnabled: false,
  logLevel: (process.env.BOLT_LOG || LogLevel.ERROR),
  // bench/slack-load/gen.py posts to opsbot's path for slash commands.
  endpoints: '/slack/commands',
});

app.command(/.*/, async ({ command, ack }) => {
  await ack({ response_type: 'in_channel', text: `${command.command} ${command.text} received` });
});

(async () => {
  await app.start(Number(process.env.PORT || 38081));
  console.log('bolt ready');
})();
