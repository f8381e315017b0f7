/**
 * Smart City Lab in JupyterLab: launcher tiles and a main-menu entry leading to the platform's
 * pages (the front door, the kit dashboards, nbgrader's assignment list, the formgraders).
 *
 * Which pages a person may open comes from the server extension labs/jupyterlab_links.py
 * (GET <base_url>smartlab/links). Pages outside JupyterLab open in a new browser tab:
 * JupyterHub forbids framing its services.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { URLExt } from '@jupyterlab/coreutils';
import { ILauncher } from '@jupyterlab/launcher';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { ServerConnection } from '@jupyterlab/services';
import { ITranslator } from '@jupyterlab/translation';
import type { ReadonlyJSONObject } from '@lumino/coreutils';
import {
  editIcon,
  homeIcon,
  LabIcon,
  listIcon,
  notebookIcon,
  offlineBoltIcon,
  RankedMenu,
  settingsIcon,
  usersIcon
} from '@jupyterlab/ui-components';

/** nbgrader 0.9's command that opens its assignment list (@jupyter/nbgrader). */
const NBGRADER_ASSIGNMENTS = 'nbgrader:open-assignment-list';
const OPEN = 'smartlab:open';
const ASSIGNMENTS = 'smartlab:assignments';

interface IDashboard {
  page: 'overview' | 'kit' | 'instructor' | 'admin';
  url: string;
  kit?: string;
  name?: string;
}

interface ILinks {
  home: string;
  dashboards: IDashboard[];
  formgraders: { course: string; url: string }[];
}

interface IEntry {
  command: string;
  args: ReadonlyJSONObject;
}

// Our own two languages (no gettext catalogue to ship); English when JupyterLab is not Russian.
const TEXTS = {
  en: {
    category: 'Smart City Lab',
    home: 'Home',
    overview: 'Kits',
    kit: 'Kit: {}',
    instructor: 'My courses',
    admin: 'Kit administration',
    assignments: 'Assignments',
    formgrader: 'Formgrader: {}',
    newTab: 'Opens in a new tab'
  },
  ru: {
    category: 'Smart City Lab',
    home: 'Главная',
    overview: 'Стенды',
    kit: 'Стенд: {}',
    instructor: 'Мои курсы',
    admin: 'Управление стендами',
    assignments: 'Задания',
    formgrader: 'Проверка работ: {}',
    newTab: 'Откроется в новой вкладке'
  }
};
type Key = keyof typeof TEXTS.en;

const ICONS: Record<IDashboard['page'], LabIcon> = {
  overview: listIcon,
  kit: offlineBoltIcon,
  instructor: usersIcon,
  admin: settingsIcon
};

async function fetchLinks(): Promise<ILinks> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'smartlab/links');
  const response = await ServerConnection.makeRequest(url, {}, settings);
  if (!response.ok) {
    throw new ServerConnection.ResponseError(response);
  }
  return (await response.json()) as ILinks;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'smartlab-jupyterlab:plugin',
  description: 'Launcher tiles and a menu leading to the Smart City Lab platform.',
  autoStart: true,
  requires: [ITranslator],
  optional: [ILauncher, IMainMenu],
  activate: (
    app: JupyterFrontEnd,
    translator: ITranslator,
    launcher: ILauncher | null,
    mainMenu: IMainMenu | null
  ) => {
    const texts = translator.languageCode.toLowerCase().startsWith('ru')
      ? TEXTS.ru
      : TEXTS.en;
    const t = (key: Key, value = '') => texts[key].replace('{}', value);
    const category = t('category');
    const { commands } = app;

    commands.addCommand(OPEN, {
      label: args => String(args.label),
      caption: t('newTab'),
      icon: args => (args.icon ? LabIcon.resolve({ icon: String(args.icon) }) : undefined),
      execute: args => {
        window.open(String(args.url), '_blank', 'noopener');
      }
    });
    commands.addCommand(ASSIGNMENTS, {
      label: t('assignments'),
      icon: notebookIcon,
      execute: () => commands.execute(NBGRADER_ASSIGNMENTS)
    });

    // Not awaited by activate: JupyterLab's `restored` waits for every plugin's activation.
    void addEntries();

    async function addEntries(): Promise<void> {
      let links: ILinks;
      try {
        links = await fetchLinks();
      } catch (reason) {
        console.error('smartlab-jupyterlab: no links from the server', reason);
        return;
      }
      const open = (label: string, url: string, icon: LabIcon): IEntry => ({
        command: OPEN,
        args: { label, url, icon: icon.name }
      });
      const entries: IEntry[] = [
        open(t('home'), links.home, homeIcon),
        ...links.dashboards.map(d =>
          open(
          d.page === 'kit' ? t('kit', d.name ?? d.kit) : t(d.page),
          d.url,
          ICONS[d.page]
        )
        )
      ];
      // nbgrader's plugins may start after ours: ask once every plugin has.
      await app.restored;
      if (commands.hasCommand(NBGRADER_ASSIGNMENTS)) {
        entries.push({ command: ASSIGNMENTS, args: {} });
      }

      entries.forEach((entry, rank) => launcher?.add({ ...entry, category, rank }));
      if (mainMenu) {
        const menu = new RankedMenu({ commands, rank: 1000 });
        menu.title.label = category;
        menu.id = 'smartlab-menu';
        entries.forEach((entry, rank) => menu.addItem({ ...entry, rank }));
        links.formgraders.forEach(({ course, url }) =>
          menu.addItem({ ...open(t('formgrader', course), url, editIcon), rank: 100 })
        );
        mainMenu.addMenu(menu, true, { rank: 1000 });
      }
    }
  }
};

export default plugin;
