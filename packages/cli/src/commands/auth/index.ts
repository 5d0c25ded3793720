import type { Noun } from '../../command.js';
import login from './login.js';
import logout from './logout.js';
import token from './token.js';
import whoami from './whoami.js';

export const auth: Noun = {
  name: 'auth',
  summary: 'Log in to a hangard and show who you are',
  examples: ['hangar auth login --url http://hangar.example.net:4280 --token "$TOKEN"'],
  verbs: [login, whoami, token, logout],
};
